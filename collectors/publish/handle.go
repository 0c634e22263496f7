package publish

import (
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// handler is a subscription the publisher makes on every connection.
type handler struct {
	topic string
	fn    func(topic string, payload []byte, retained bool)
}

// Handle subscribes to topic (wildcards allowed, QoS 1) on every
// connection — the session is clean, so subscriptions do not survive one —
// and passes each message to fn on its own goroutine. Call it before Run.
// Write commands use it (package command).
func (p *Publisher) Handle(topic string, fn func(topic string, payload []byte, retained bool)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.handlers = append(p.handlers, handler{topic: topic, fn: fn})
}

// subscribeHandlers is called by the connect handler; it must not block.
func (p *Publisher) subscribeHandlers(c mqtt.Client) {
	p.mu.Lock()
	hs := append([]handler(nil), p.handlers...)
	p.mu.Unlock()
	for _, h := range hs {
		fn := h.fn
		tok := c.Subscribe(h.topic, 1, func(_ mqtt.Client, m mqtt.Message) {
			payload := append([]byte(nil), m.Payload()...)
			go fn(m.Topic(), payload, m.Retained())
		})
		go func(topic string) {
			if tok.WaitTimeout(10*time.Second) && tok.Error() != nil {
				p.log.Error("mqtt subscribe failed", "topic", topic, "err", tok.Error())
			}
		}(h.topic)
	}
}

// Send publishes payload on topic at once (QoS 1, not retained), outside
// the durable queue — for replies that only matter now — and waits up to
// timeout for the broker's acknowledgement.
func (p *Publisher) Send(topic string, payload []byte, timeout time.Duration) error {
	tok := p.client.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(timeout) {
		return fmt.Errorf("publish to %q: no acknowledgement within %v", topic, timeout)
	}
	return tok.Error()
}

// Topic is the contract topic {prefix}/{gateway}/{kind}/{collector}, e.g.
// kind "cmd" or "cmd-reply"; device, when set, is one more level.
func (p *Publisher) Topic(kind, device string) string {
	t := fmt.Sprintf("%s/%s/%s/%s", p.cfg.TopicPrefix, p.cfg.GatewayID, kind, p.cfg.CollectorName)
	if device != "" {
		t += "/" + device
	}
	return t
}
