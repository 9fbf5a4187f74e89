// The progress display: one rewritten line on a terminal, throttled lines otherwise, and event
// lines that never get lost under the progress line.
#include "client/watch.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

namespace relora::client {
namespace {

using ::testing::HasSubstr;

relora::v1::Job at_step(int64_t step) {
  relora::v1::Job job;
  job.set_id("job-1");
  job.set_state(relora::v1::JOB_STATE_RUNNING);
  job.mutable_progress()->set_step(step);
  job.mutable_progress()->set_total_steps(100);
  job.mutable_progress()->set_loss(5.0);
  return job;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(ClientProgress, PipeGetsAtMostOneLinePerInterval) {
  std::ostringstream out;
  ProgressDisplay d(out, /*tty=*/false, /*line_interval_s=*/5.0);
  d.update(at_step(1), 100.0);  // printed: the first
  d.update(at_step(2), 101.0);  // too soon
  d.update(at_step(3), 104.9);  // too soon
  d.update(at_step(4), 105.0);  // printed
  d.update(at_step(4), 111.0);  // unchanged: not printed
  auto done = at_step(100);
  done.set_state(relora::v1::JOB_STATE_COMPLETED);
  d.finish(done);  // always printed
  const std::string s = out.str();
  EXPECT_EQ(count(s, "\n"), 3u) << s;
  EXPECT_THAT(s, HasSubstr("step 1/100"));
  EXPECT_THAT(s, HasSubstr("step 4/100"));
  EXPECT_THAT(s, HasSubstr("completed  step 100/100"));
  EXPECT_EQ(s.find('\r'), std::string::npos);  // no terminal control in logs
}

TEST(ClientProgress, TerminalRewritesOneLine) {
  std::ostringstream out;
  ProgressDisplay d(out, /*tty=*/true);
  d.update(at_step(1), 0.0);
  d.update(at_step(2), 0.1);
  EXPECT_EQ(count(out.str(), "\n"), 0u);
  EXPECT_EQ(count(out.str(), "\r"), 2u);
  relora::v1::JobEvent e;
  e.set_step(2);
  e.set_rank(0);
  e.set_kind("checkpoint");
  e.set_message("runs/x/step-00000002");
  d.event(e);
  // The event is printed on a cleared line and the progress line is drawn again below it.
  const std::string s = out.str();
  EXPECT_THAT(s, HasSubstr("\r\x1b[Kstep 2  rank 0  checkpoint  runs/x/step-00000002\nrunning  step 2/100"));
  d.finish(at_step(3));
  EXPECT_EQ(out.str().back(), '\n');
}

TEST(ClientProgress, EventsAlwaysPrintedOnAPipe) {
  std::ostringstream out;
  ProgressDisplay d(out, /*tty=*/false);
  relora::v1::JobEvent e;
  e.set_kind("command");
  e.set_rank(-1);
  e.set_step(10);
  e.set_message("merge");
  d.event(e);
  d.event(e);
  EXPECT_EQ(out.str(), "step 10  coordinator  command  merge\nstep 10  coordinator  command  merge\n");
}

TEST(ClientProgress, CancellerBeforeAttachStillCancels) {
  WatchCanceller c;
  c.cancel();
  grpc::ClientContext ctx;
  c.attach(&ctx);  // must TryCancel immediately
  c.detach();
  EXPECT_TRUE(c.cancelled());
}

}  // namespace
}  // namespace relora::client
