// Package bench holds fieldgate's scenario benchmarks — whole processes
// (collectors, devsim, mosquitto, the supervisor) measured from outside
// through /proc — and the writer of their report, bench/RESULTS.md.
//
// `make bench` (scripts/bench.sh) runs them together with the packages'
// own Go benchmarks and hands every result line to WriteReport, which
// matches the figures against Figures (value, target, machine, and the
// previous run's value read back from the old report). The benchmarks are
// never part of `make test`: they take minutes and their figures depend on
// the machine; the tests of this package only check the report writer.
package bench
