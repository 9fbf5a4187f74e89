"""Deterministic English-like training text for the end-to-end tests.

The e2e tests check mechanics and exactness (lockstep merges, exact resume, elastic restarts,
metrics), not what the model learns, so they need text that a 512-piece SentencePiece unigram
tokenizer can be trained on, not real prose. Generating it makes the tests run in every clone,
with or without ../shared/data. Standard library only.
"""
import os
import random
import tempfile

SEED = 1234
TARGET_BYTES = 600_000  # big enough for a 512-piece tokenizer, small enough to tokenize quickly

# The most frequent words are real function words, so the text reads like English; the rest of
# the vocabulary is made up from syllables.
COMMON = ("the of and to a in that is was he for it with as his on be at by i this had not are "
          "but from or have an they which one you were her all she there would their we him been "
          "has when who will more no if out so said what up its about into than them can only").split()
ONSETS = ("b c d f g h j k l m n p r s t v w y z bl br ch cl cr dr fl gr pl pr sh sl st th tr wh"
          ).split() + [""]
VOWELS = "a e i o u ai ea ee oa oo ou ie".split()
CODAS = "n r s t l m nd st ng rk ll th ck".split() + ["", "", ""]
VOCABULARY_SIZE = 800


def _vocabulary(rng):
    words, seen = list(COMMON), set(COMMON)
    while len(words) < VOCABULARY_SIZE:
        word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
                       for _ in range(rng.choice((1, 1, 2, 2, 2, 3))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def generate(target_bytes=TARGET_BYTES, seed=SEED):
    """The text: paragraphs of 2-7 sentences of 5-15 words, Zipf-distributed word frequencies."""
    rng = random.Random(seed)
    words = _vocabulary(rng)
    cum_weights, total = [], 0.0
    for rank in range(len(words)):  # Zipf: frequency ~ 1 / rank
        total += 1.0 / (rank + 1)
        cum_weights.append(total)

    paragraphs, size = [], 0
    while size < target_bytes:
        sentences = []
        for _ in range(rng.randint(2, 7)):
            sentence = rng.choices(words, cum_weights=cum_weights, k=rng.randint(5, 15))
            if len(sentence) > 7 and rng.random() < 0.4:
                sentence[rng.randint(2, len(sentence) - 3)] += ","
            sentence[0] = sentence[0].capitalize()
            sentences.append(" ".join(sentence) + rng.choice(".....?!"))
        paragraphs.append(" ".join(sentences))
        size += len(paragraphs[-1]) + 2
    return "\n\n".join(paragraphs) + "\n"


def ensure_text(path):
    """Writes the text to `path` unless it already holds exactly that text; returns `path`.

    An unchanged file is left alone: its mtime is part of the tokenizer cache key. A new one is
    written under a temporary name and renamed, so concurrent test processes never read a
    half-written file."""
    text = generate()
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return path
    except FileNotFoundError:
        pass
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".synthetic-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from other users of the build tree
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
