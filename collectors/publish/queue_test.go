package publish

import (
	"context"
	"testing"
)

func TestQueueDropOldestCounted(t *testing.T) {
	q := newQueue(3)
	for s := uint64(1); s <= 5; s++ {
		q.pushLocked(message{seq: s})
	}
	if q.Len() != 3 || q.Dropped() != 2 {
		t.Fatalf("len %d dropped %d", q.Len(), q.Dropped())
	}
	m, _ := q.next(context.Background())
	if m.seq != 3 {
		t.Errorf("oldest kept seq = %d, want 3", m.seq)
	}
}

func TestQueueAckAndResend(t *testing.T) {
	q := newQueue(10)
	for s := uint64(1); s <= 4; s++ {
		q.pushLocked(message{seq: s})
	}
	ctx := context.Background()
	for want := uint64(1); want <= 3; want++ {
		if m, _ := q.next(ctx); m.seq != want {
			t.Fatalf("next = %d, want %d", m.seq, want)
		}
	}
	q.ack(2) // out of order: head 1 is not acked, nothing leaves yet
	if q.Len() != 4 {
		t.Fatalf("len %d after out-of-order ack", q.Len())
	}
	q.resend(1)
	if m, _ := q.next(ctx); m.seq != 1 {
		t.Fatalf("after resend next = %d, want 1", m.seq)
	}
	q.ack(1)
	if q.Len() != 2 { // 1 and 2 acknowledged and gone; 3 in flight, 4 queued
		t.Fatalf("len %d, want 2", q.Len())
	}
	if m, _ := q.next(ctx); m.seq != 3 { // 2 was acknowledged: the rewind resends from 3
		t.Fatalf("next = %d, want 3", m.seq)
	}
}

func TestQueueNextStopsOnCancel(t *testing.T) {
	q := newQueue(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := q.next(ctx); ok || !q.closed() {
		t.Error("next returned a message on a cancelled context")
	}
}
