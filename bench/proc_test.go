package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"fieldgate/internal/testpeer"
)

// procSample is what /proc tells of a process at one instant.
type procSample struct {
	// CPU is the user plus system time of all its threads (10 ms ticks).
	CPU time.Duration
	// RSS is the resident set now (VmRSS), HWM the most it ever was
	// (VmHWM), start-up included; bytes.
	RSS, HWM int64
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture fieldgate runs on.
const clockTick = 10 * time.Millisecond

func sampleProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15.
	rest := stat[bytes.LastIndexByte(stat, ')')+2:]
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: times %q %q", pid, f[11], f[12])
	}
	s.CPU = time.Duration(ut+st) * clockTick
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		line := sc.Text()
		for key, dst := range map[string]*int64{"VmRSS:": &s.RSS, "VmHWM:": &s.HWM} {
			if v, ok := strings.CutPrefix(line, key); ok {
				kib, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				*dst = kib << 10
			}
		}
	}
	return s, sc.Err()
}

// rssWatch samples a process's RSS every interval until stopped, keeping
// the highest value seen: VmHWM of a whole run, but for a window.
type rssWatch struct {
	mu   sync.Mutex
	max  int64
	stop chan struct{}
	done chan struct{}
}

func watchRSS(pids func() []int, every time.Duration) *rssWatch {
	w := &rssWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			var sum int64
			for _, pid := range pids() {
				if s, err := sampleProc(pid); err == nil {
					sum += s.RSS
				}
			}
			w.mu.Lock()
			w.max = max(w.max, sum)
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// Stop ends the sampling and returns the highest sum of RSS seen.
func (w *rssWatch) Stop() int64 {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.max
}

const mib = 1 << 20

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// window is what measureCollector saw of one collector process.
type window struct {
	traffic      tallyResult
	elapsed      time.Duration
	cpu          time.Duration // the process's CPU time in the window
	peakRSS, rss float64       // MiB: VmHWM at the end (start-up included), the window's peak
	readingsPerS float64
	corePercent  float64
}

// measureCollector waits until all devices of c publish, then for the rest
// of warmup, and measures the process over w: CPU, RSS and what sub
// received.
func measureCollector(b *testing.B, c *testpeer.Collector, sub *tally, devices int, warmup, w time.Duration) window {
	b.Helper()
	pid := c.Pid()
	started := time.Now()
	testpeer.WaitFor(b, 3*time.Minute, "every device publishing", func() bool {
		if c.Exited() {
			b.Fatalf("collector exited:\n%s", c.Output())
		}
		return sub.devicesSeen() == devices
	})
	b.Logf("every device published %.1f s after the start", time.Since(started).Seconds())
	if rest := warmup - time.Since(started); rest > 0 {
		time.Sleep(rest)
	}
	rss := watchRSS(func() []int { return []int{pid} }, 100*time.Millisecond)
	before, err := sampleProc(pid)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	sub.start()
	perfStat(b, pid, w)
	after, err := sampleProc(pid)
	elapsed := time.Since(t0)
	tr := sub.stop()
	windowRSS := rss.Stop()
	if err != nil {
		b.Fatal(err)
	}
	return window{
		traffic: tr, elapsed: elapsed, cpu: after.CPU - before.CPU,
		peakRSS: float64(after.HWM) / mib, rss: float64(windowRSS) / mib,
		readingsPerS: float64(tr.Readings) / elapsed.Seconds(),
		corePercent:  100 * (after.CPU - before.CPU).Seconds() / elapsed.Seconds(),
	}
}
