package devsim

import (
	"context"
	"sync"
	"time"
)

// wire models one RTU line for EmulateWire: it is busy while a frame is on
// it and for the 3.5-character silence that must follow every frame.
//
// A transaction received at t (the instant the master's write reached us; on
// a pty that is the instant it was written) occupies the line as
//
//	request bytes | silence | response bytes | silence
//
// starting at t or when the line is free, whichever is later. The response is
// written when its last byte would have arrived, so a master that waits for
// it sees exactly the line's throughput. For a full 125-register read at
// 19200 baud and 11 bits a character this is (8 + 255) chars + 2 x 3.5 chars
// = 154.7 ms, i.e. 808 registers per second.
type wire struct {
	char time.Duration // one character
	gap  time.Duration // the 3.5-character silence

	mu        sync.Mutex
	busyUntil time.Time
}

// transact books a request of reqLen bytes received at recv and a response
// of respLen bytes (0: no response) and returns when the response is due.
func (w *wire) transact(recv time.Time, reqLen, respLen int) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := recv
	if w.busyUntil.After(start) {
		start = w.busyUntil
	}
	due := start.Add(time.Duration(reqLen) * w.char)
	if respLen > 0 {
		due = due.Add(w.gap + time.Duration(respLen)*w.char)
	}
	w.busyUntil = due.Add(w.gap)
	return due
}

// sleepUntil waits until t or until ctx is done (then it returns ctx.Err()).
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
