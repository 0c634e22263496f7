package bench

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// tally is an MQTT subscriber to a collector's data topics that counts what
// arrives and how late: the receipt time minus the batch's `ts` (the time
// its poll started), so the latency covers the device's answer, encoding,
// the durable queue, the publisher and the broker. `ts` has millisecond
// resolution: a latency is up to 1 ms too high, 0.5 ms on average.
type tally struct {
	mu       sync.Mutex
	counting bool
	latency  []time.Duration
	readings int64
	bad      int64
	batches  map[string]int // per device, while counting
	seen     map[string]bool
}

// subscribe starts a tally on topic at broker ("host:port"), QoS 0 so that
// the subscriber costs the broker as little as possible.
func subscribe(b testing.TB, broker, topic string) *tally {
	b.Helper()
	t := &tally{batches: map[string]int{}, seen: map[string]bool{}}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + broker).
		SetClientID(fmt.Sprintf("bench-%d-%d", os.Getpid(), time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(false)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("subscriber: connect to %s: %v", broker, tok.Error())
	}
	b.Cleanup(func() { c.Disconnect(100) })
	tok := c.Subscribe(topic, 0, func(_ mqtt.Client, m mqtt.Message) { t.add(m.Topic(), m.Payload(), time.Now()) })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("subscriber: subscribe %s: %v", topic, tok.Error())
	}
	return t
}

var (
	tsKey      = []byte(`"ts":`)
	tagKey     = []byte(`{"tag":`)
	badQuality = []byte(`"quality":"bad"`)
)

func (t *tally) add(topic string, payload []byte, at time.Time) {
	device := topic[strings.LastIndexByte(topic, '/')+1:]
	// The batch's ts is the first "ts" of the payload; the readings follow.
	var lat time.Duration
	if i := bytes.Index(payload, tsKey); i >= 0 {
		rest := payload[i+len(tsKey):]
		end := bytes.IndexAny(rest, ",}")
		if ms, err := strconv.ParseInt(string(rest[:max(end, 0)]), 10, 64); err == nil {
			lat = at.Sub(time.UnixMilli(ms))
		}
	}
	n, bad := bytes.Count(payload, tagKey), bytes.Count(payload, badQuality)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seen[device] = true
	if !t.counting {
		return
	}
	t.latency = append(t.latency, lat)
	t.readings += int64(n)
	t.bad += int64(bad)
	t.batches[device]++
}

// devicesSeen is how many devices published at least once so far.
func (t *tally) devicesSeen() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.seen)
}

// start begins a measurement window, stop ends it.
func (t *tally) start() {
	t.mu.Lock()
	t.counting = true
	t.mu.Unlock()
}

func (t *tally) stop() tallyResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.counting = false
	r := tallyResult{Readings: t.readings, Bad: t.bad, Batches: t.batches}
	slices.Sort(t.latency)
	r.P50, r.P99, r.Max = quantile(t.latency, 0.50), quantile(t.latency, 0.99), quantile(t.latency, 1)
	return r
}

type tallyResult struct {
	Readings, Bad int64
	Batches       map[string]int
	P50, P99, Max time.Duration
}

// quantile of sorted values, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
