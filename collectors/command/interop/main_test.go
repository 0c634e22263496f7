package interop

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"fieldgate/internal/testpeer"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testpeer.CleanBuilds()
	os.Exit(code)
}

const wait = 60 * time.Second

var users = map[string]string{"collector": "c-secret", "scada": "s-secret", "viewer": "v-secret"}

// aclBroker is a mosquitto that requires passwords and enforces the ACL
// the README documents.
func aclBroker(t *testing.T) string {
	t.Helper()
	acl, err := filepath.Abs("../../../compose/mosquitto.acl")
	if err != nil {
		t.Fatal(err)
	}
	return testpeer.Mosquitto(t, testpeer.WithPassword(users), testpeer.WithConfigLines("acl_file "+acl))
}

// passwordFile writes the collector's MQTT password file.
func passwordFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "mqtt.pass")
	if err := os.WriteFile(p, []byte(users["collector"]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// operator is an MQTT client of one account that sends commands and
// collects replies.
type operator struct {
	t       *testing.T
	c       mqtt.Client
	replies chan reply
}

type reply struct {
	Topic   string
	ID      json.RawMessage `json:"id"`
	Error   string          `json:"error"`
	Results []struct {
		Tag      string `json:"tag"`
		OK       bool   `json:"ok"`
		ReadBack any    `json:"read_back"`
		Error    string `json:"error"`
	} `json:"results"`
}

func connect(t *testing.T, broker, user string) *operator {
	t.Helper()
	o := &operator{t: t, replies: make(chan reply, 100)}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + broker).
		SetClientID(fmt.Sprintf("test-%s-%d", user, time.Now().UnixNano())).
		SetUsername(user).SetPassword(users[user]).SetCleanSession(true)
	o.c = mqtt.NewClient(opts)
	if tok := o.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect as %s: %v", user, tok.Error())
	}
	tok := o.c.Subscribe("fieldgate/+/cmd-reply/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		var r reply
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			t.Errorf("reply %s is not JSON: %v", m.Payload(), err)
			return
		}
		r.Topic = m.Topic()
		o.replies <- r
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { o.c.Disconnect(100) })
	return o
}

// send publishes a command (QoS 1: the broker has handled it, allowed or
// not, when send returns).
func (o *operator) send(topic, payload string, retained bool) {
	o.t.Helper()
	tok := o.c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		o.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// await returns the reply with id.
func (o *operator) await(id string) reply {
	o.t.Helper()
	r, ok := o.awaitWithin(id, wait)
	if !ok {
		o.t.Fatalf("no reply to command %q", id)
	}
	return r
}

// ready sends a command until the collector answers it (it subscribes
// once connected) and returns the answer.
func (o *operator) ready(topic, payload, id string) reply {
	o.t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		o.send(topic, payload, false)
		if r, ok := o.awaitWithin(id, 2*time.Second); ok {
			return r
		}
	}
	o.t.Fatalf("the collector never answered command %q", id)
	return reply{}
}

func (o *operator) awaitWithin(id string, d time.Duration) (reply, bool) {
	deadline := time.After(d)
	for {
		select {
		case r := <-o.replies:
			if string(r.ID) == `"`+id+`"` {
				return r, true
			}
			o.t.Logf("other reply %s: %+v", r.ID, r)
		case <-deadline:
			return reply{}, false
		}
	}
}

// writes parses a call of command: one request, one result.
func oneResult(t *testing.T, r reply) (ok bool, readBack any, errText string) {
	t.Helper()
	if r.Error != "" || len(r.Results) != 1 {
		t.Fatalf("reply %+v: want one result", r)
	}
	return r.Results[0].OK, r.Results[0].ReadBack, r.Results[0].Error
}
