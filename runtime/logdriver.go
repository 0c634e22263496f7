package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"fieldgate/runtime/logrotate"
)

// Arguments the containerd shim passes to the log driver: the keys and
// values of the binary:// log URI's query, as pairs in random order.
const (
	logDriverKey         = "fieldgate-log"
	logDriverKeyMaxBytes = "fieldgate-log-max-bytes"
	logDriverKeyFiles    = "fieldgate-log-files"
)

// logDriverDrain bounds how long the driver keeps reading after SIGTERM (the
// shim closes the pipes before it signals, and kills the driver after 12 s).
const logDriverDrain = 5 * time.Second

// IsLogDriver reports whether a process was started by the containerd shim
// as a task's log driver: args (os.Args[1:]) are the pairs of the log URI.
// The supervisor's main must check this first:
//
//	if runtime.IsLogDriver(os.Args[1:]) {
//		if err := runtime.RunLogDriver(os.Args[1:]); err != nil {
//			os.Exit(1)
//		}
//		os.Exit(0)
//	}
func IsLogDriver(args []string) bool {
	if len(args)%2 != 0 {
		return false
	}
	for i := 0; i < len(args); i += 2 {
		if args[i] == logDriverKey {
			return true
		}
	}
	return false
}

// RunLogDriver is the log driver: it reads the task's stdout (fd 3) and
// stderr (fd 4), signals readiness by closing fd 5, and appends whole lines
// to the log file named in args, rotated per the size and count in args. It
// returns when both streams end. It survives SIGTERM (the shim's request to
// finish) long enough to drain what is left. If the log file cannot be
// opened it still drains the streams, so the collector never blocks or gets
// EPIPE on a log write; the error is returned at the end.
//
// It runs as root on the host, started by the shim: the file is written
// through package logrotate, which follows no link and refuses a directory
// anyone else can write, and Create refuses a log path inside a writable
// mount — so what the task prints can never land in a file of its choice.
func RunLogDriver(args []string) error {
	if !IsLogDriver(args) {
		return errors.New("log driver: arguments lack " + logDriverKey)
	}
	kv := map[string]string{}
	for i := 0; i+1 < len(args); i += 2 {
		kv[args[i]] = args[i+1]
	}
	maxBytes, _ := strconv.ParseInt(kv[logDriverKeyMaxBytes], 10, 64)
	files, _ := strconv.Atoi(kv[logDriverKeyFiles])

	stdout := os.NewFile(3, "container-stdout")
	stderr := os.NewFile(4, "container-stderr")
	ready := os.NewFile(5, "container-ready")
	if stdout == nil || stderr == nil || ready == nil {
		return errors.New("log driver: fds 3, 4 and 5 are not open (not started by the containerd shim)")
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	var (
		sink    io.Writer = io.Discard
		openErr error
	)
	w, err := logrotate.New(kv[logDriverKey], maxBytes, files)
	if err != nil {
		openErr = fmt.Errorf("log driver: %w", err)
	} else {
		sink = w
		defer w.Close()
	}
	if err := ready.Close(); err != nil {
		return fmt.Errorf("log driver: signal ready: %w", err)
	}

	done := make(chan error, 1)
	go func() { // the copies end at EOF, when the task's pipes close
		var g errgroup.Group
		g.Go(func() error { return copyLines(sink, stdout) })
		g.Go(func() error { return copyLines(sink, stderr) })
		done <- g.Wait()
	}()
	select {
	case err := <-done:
		return errors.Join(openErr, err)
	case <-sigs:
	}
	select {
	case err := <-done:
		return errors.Join(openErr, err)
	case <-time.After(logDriverDrain):
		return errors.Join(openErr, errors.New("log driver: streams still open after SIGTERM; giving up"))
	}
}

// copyLines writes src to dst a whole line per Write (so the two streams
// interleave by lines), splitting only lines longer than 64 KiB.
func copyLines(dst io.Writer, src io.Reader) error {
	br := bufio.NewReaderSize(src, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if _, werr := dst.Write(line); werr != nil {
				// Keep draining: a full disk must not block the collector.
				dst = io.Discard
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF), errors.Is(err, os.ErrClosed):
			return nil
		default:
			return fmt.Errorf("log driver: read: %w", err)
		}
	}
}
