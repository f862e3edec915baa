// A duty-cycled busy loop: busy for BUSY_US microseconds, then asleep for SLEEP_US, forever.
// One per core (taskset) in a cpu cgroup that outweighs the command's, it takes about half of
// each core while the command wants it too, yet never holds a core longer than BUSY_US: CPU-bound
// work slows by about 2x, and a process that blocks (fsync, a pipe, a lock) is not penalised
// more than a slower CPU would penalise it.
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  double busy = (argc > 1 ? atof(argv[1]) : 525) * 1e-6;
  double sleep = (argc > 2 ? atof(argv[2]) : 475) * 1e-6;
  prctl(PR_SET_TIMERSLACK, 1UL);  // wake on time: the default slack is 50 us
  struct timespec pause = {0, (long)(sleep * 1e9)};
  for (;;) {
    double start = now();
    while (now() - start < busy) {
    }
    nanosleep(&pause, NULL);
  }
}
