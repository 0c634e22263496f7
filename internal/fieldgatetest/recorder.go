package fieldgatetest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"fieldgate/internal/testpeer"
)

// Seen is one received data message.
type Seen struct {
	Seq      uint64
	TS, Recv time.Time // poll time (the batch's ts), receive time
	Replayed bool
	Bad      []string // "tag: error" of each bad reading
}

// CollectorReport is the collector's status.json as the supervisor's
// /status passes it on (collector_status).
type CollectorReport struct {
	CollectorStatus
	MQTT struct {
		Connected bool   `json:"connected"`
		LastError string `json:"last_error"`
	} `json:"mqtt"`
}

// CollectorStatus is the retained collector status message.
type CollectorStatus struct {
	State   string            `json:"state"`
	Version string            `json:"version"`
	Devices map[string]string `json:"devices"`
	Queue   *struct {
		Pending  int    `json:"pending"`
		Bytes    int64  `json:"bytes"`
		Dropped  uint64 `json:"dropped"`
		Rejected uint64 `json:"rejected"`
	} `json:"queue"`
}

// Recorder subscribes to the gateway's data and collector status topics and
// keeps every data message per collector and the latest status.
type Recorder struct {
	mu     sync.Mutex
	data   map[string][]Seen
	status map[string]CollectorStatus
}

// NewRecorder connects a subscriber with a persistent session (testpeer's
// mosquitto keeps sessions across restarts), reconnecting every 100–500 ms.
// A seq used twice for batches of different polls fails t.
func NewRecorder(t *testing.T, broker, user, password string) *Recorder {
	t.Helper()
	r := &Recorder{data: map[string][]Seen{}, status: map[string]CollectorStatus{}}
	handler := func(_ mqtt.Client, m mqtt.Message) { r.record(t, m.Topic(), m.Payload(), time.Now()) }
	topics := map[string]byte{"fieldgate/" + GatewayID + "/data/#": 1, "fieldgate/" + GatewayID + "/status/+": 1}
	opts := mqtt.NewClientOptions().
		AddBroker("tcp://" + broker).
		SetClientID(fmt.Sprintf("faultsub-%d", time.Now().UnixNano())).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(500 * time.Millisecond).
		SetOnConnectHandler(func(c mqtt.Client) { c.SubscribeMultiple(topics, handler) })
	if user != "" {
		opts.SetUsername(user).SetPassword(password)
	}
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("recorder: connect to %s: %v", broker, tok.Error())
	}
	if tok := c.SubscribeMultiple(topics, handler); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("recorder: subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return r
}

func (r *Recorder) record(t *testing.T, topic string, payload []byte, now time.Time) {
	parts := strings.Split(topic, "/")
	switch {
	case len(parts) == 5 && parts[2] == "data":
		var b struct {
			Seq      uint64
			TS       int64
			Replayed bool
			Readings []struct{ Tag, Quality, Error string }
		}
		if err := json.Unmarshal(payload, &b); err != nil || b.Seq == 0 || b.TS == 0 {
			t.Errorf("bad batch on %s (%v): %s", topic, err, payload)
			return
		}
		s := Seen{Seq: b.Seq, TS: time.UnixMilli(b.TS), Recv: now, Replayed: b.Replayed}
		for _, rd := range b.Readings {
			if rd.Quality == "bad" {
				s.Bad = append(s.Bad, rd.Tag+": "+rd.Error)
			}
		}
		r.mu.Lock()
		// A duplicate (QoS 1) is the same batch again; the same seq on a
		// batch of another poll means seq repeated.
		for _, o := range r.data[parts[3]] {
			if o.Seq == s.Seq && !o.TS.Equal(s.TS) {
				t.Errorf("%s: seq %d used twice: batches polled at %v and %v", parts[3], s.Seq, o.TS, s.TS)
				break
			}
		}
		r.data[parts[3]] = append(r.data[parts[3]], s)
		r.mu.Unlock()
	case len(parts) == 4 && parts[2] == "status":
		var st CollectorStatus
		if err := json.Unmarshal(payload, &st); err != nil {
			t.Errorf("bad status on %s (%v): %s", topic, err, payload)
			return
		}
		r.mu.Lock()
		r.status[parts[3]] = st
		r.mu.Unlock()
	}
}

func (r *Recorder) All(c string) []Seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Seen(nil), r.data[c]...)
}

func (r *Recorder) Latest(c string) CollectorStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status[c]
}

func (r *Recorder) MaxSeq(c string) uint64 {
	var m uint64
	for _, s := range r.All(c) {
		m = max(m, s.Seq)
	}
	return m
}

// missing returns the seqs from the lowest seen at or above from up to the
// highest seen that never arrived.
func (r *Recorder) Missing(c string, from uint64) []uint64 {
	got := map[uint64]bool{}
	lo, hi := uint64(0), uint64(0)
	for _, s := range r.All(c) {
		if s.Seq < from {
			continue
		}
		got[s.Seq] = true
		if lo == 0 || s.Seq < lo {
			lo = s.Seq
		}
		hi = max(hi, s.Seq)
	}
	var out []uint64
	for s := lo; lo != 0 && s <= hi; s++ {
		if !got[s] {
			out = append(out, s)
		}
	}
	return out
}

// polled counts the batches (duplicates once) polled in [a, b].
func (r *Recorder) Polled(c string, a, b time.Time) int {
	n := map[uint64]bool{}
	for _, s := range r.All(c) {
		if !s.TS.Before(a) && !s.TS.After(b) {
			n[s.Seq] = true
		}
	}
	return len(n)
}

// waitGood waits until collector c published a batch polled after after
// with every reading good.
func (r *Recorder) WaitGood(t *testing.T, c string, after time.Time, timeout time.Duration) {
	t.Helper()
	testpeer.WaitFor(t, timeout, c+": a good batch polled after "+after.Format("15:04:05.000"), func() bool {
		for _, s := range r.All(c) {
			if s.TS.After(after) && len(s.Bad) == 0 {
				return true
			}
		}
		return false
	})
}

// describe summarises the batches polled in [a, b] for a failure message.
func (r *Recorder) Describe(c string, a, b time.Time) string {
	var lines []string
	for _, s := range r.All(c) {
		if s.TS.Before(a) || s.TS.After(b) {
			continue
		}
		lines = append(lines, fmt.Sprintf("seq %d polled %s latency %v replayed %v bad %q",
			s.Seq, s.TS.Format("15:04:05.000"), s.Recv.Sub(s.TS).Round(time.Millisecond), s.Replayed, s.Bad))
	}
	return fmt.Sprintf("%d messages polled %s..%s:\n%s", len(lines), a.Format("15:04:05.000"), b.Format("15:04:05.000"), strings.Join(lines, "\n"))
}

// Ranges prints sorted seqs compactly: "5-9, 14".
func Ranges(seqs []uint64) string {
	var b strings.Builder
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		if i == j {
			fmt.Fprintf(&b, "%d", seqs[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", seqs[i], seqs[j])
		}
		i = j + 1
	}
	return b.String()
}

// waitRecovered waits until every collector has a batch polled at or after
// after and no seq since from[c] is missing; it returns how long that took
// from after. On timeout it fails t naming the missing seqs.
func (r *Recorder) WaitRecovered(t *testing.T, names []string, from map[string]uint64, after time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done := true
		for _, c := range names {
			live := false
			for _, s := range r.All(c) {
				if !s.TS.Before(after) {
					live = true
					break
				}
			}
			if !live || len(r.Missing(c, from[c])) > 0 {
				done = false
			}
		}
		if done {
			return time.Since(after)
		}
		if time.Now().After(deadline) {
			for _, c := range names {
				t.Errorf("%s: after %v: max seq %d, missing seqs: %s", c, timeout, r.MaxSeq(c), Ranges(r.Missing(c, from[c])))
			}
			t.FailNow()
		}
		time.Sleep(20 * time.Millisecond)
	}
}
