package publish

import (
	"context"
	"sync"
)

// message is one encoded batch waiting for its PUBACK.
type message struct {
	seq     uint64
	topic   string
	payload []byte
	acked   bool
}

// queue is the outbound queue: batches in seq order, each kept until the
// broker acknowledged it. msgs[0] is the oldest unacknowledged batch and
// msgs[sendAt] the next one to send. Seqs in msgs are contiguous because
// batches leave only from the head (acknowledged or dropped).
type queue struct {
	mu       sync.Mutex
	msgs     []message
	sendAt   int
	limit    int
	dropped  uint64
	isClosed bool
	wake     chan struct{}
}

func newQueue(limit int) *queue {
	return &queue{limit: limit, wake: make(chan struct{}, 1)}
}

// pushLocked appends m (q.mu held) and, past the limit, drops the oldest
// batch; it returns how many were dropped.
func (q *queue) pushLocked(m message) int {
	q.msgs = append(q.msgs, m)
	dropped := 0
	for len(q.msgs) > q.limit {
		q.msgs[0] = message{}
		q.msgs = q.msgs[1:]
		if q.sendAt > 0 {
			q.sendAt--
		}
		q.dropped++
		dropped++
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return dropped
}

// next returns the next batch to send, waiting for one; false once ctx is
// cancelled.
func (q *queue) next(ctx context.Context) (message, bool) {
	for {
		q.mu.Lock()
		if q.sendAt < len(q.msgs) {
			m := q.msgs[q.sendAt]
			q.sendAt++
			q.mu.Unlock()
			return m, true
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-ctx.Done():
			q.mu.Lock()
			q.isClosed = true
			q.mu.Unlock()
			return message{}, false
		}
	}
}

func (q *queue) index(seq uint64) int {
	if len(q.msgs) == 0 || seq < q.msgs[0].seq {
		return -1
	}
	i := int(seq - q.msgs[0].seq)
	if i >= len(q.msgs) {
		return -1
	}
	return i
}

// ack marks seq acknowledged and removes the acknowledged head.
func (q *queue) ack(seq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if i := q.index(seq); i >= 0 {
		q.msgs[i].acked = true
	}
	n := 0
	for n < len(q.msgs) && q.msgs[n].acked {
		q.msgs[n] = message{}
		n++
	}
	q.msgs = q.msgs[n:]
	// An acknowledged batch that a rewind had scheduled again need not go out.
	q.sendAt = max(0, q.sendAt-n)
}

// resend puts seq (and everything sent after it) back to be sent again.
func (q *queue) resend(seq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if i := q.index(seq); i >= 0 && i < q.sendAt {
		q.sendAt = i
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Len is the number of batches queued or in flight.
func (q *queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.msgs)
}

// Dropped is the number of batches dropped because the queue was full.
func (q *queue) Dropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

func (q *queue) closed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.isClosed
}
