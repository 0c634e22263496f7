package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/sync/errgroup"

	tea "github.com/charmbracelet/bubbletea"

	"fieldgate/collectors/publish"
	"fieldgate/collectors/runenv"
)

// Defaults of SubscriberConfig.
const (
	DefaultFlushInterval = 100 * time.Millisecond
	DefaultRetryMax      = 5 * time.Second
)

// SubscriberConfig says which broker to read and how.
type SubscriberConfig struct {
	// Broker is any MQTT_BROKER form (runenv.NormalizeBroker).
	Broker string
	// Credentials are the gateway's (gateway.yaml's mqtt section).
	Credentials publish.Credentials
	// Topics are the subscriptions (State.Topics).
	Topics []string
	// FlushInterval batches messages into one MessagesMsg, so a busy gateway
	// redraws the view at most this often; default DefaultFlushInterval.
	FlushInterval time.Duration
	// RetryMax caps the wait between connection attempts (1 s doubling);
	// default DefaultRetryMax.
	RetryMax time.Duration
}

// Subscriber reads the view's topics from a broker. Create it with
// NewSubscriber.
type Subscriber struct {
	cfg    SubscriberConfig
	log    *slog.Logger
	client mqtt.Client
	msgs   chan Message
	conn   chan ConnMsg
	// done is closed when Run ends, releasing a handler blocked on msgs.
	done chan struct{}
}

// NewSubscriber validates cfg and reads the credential files; Run connects.
func NewSubscriber(cfg SubscriberConfig, log *slog.Logger) (*Subscriber, error) {
	broker, err := runenv.NormalizeBroker(cfg.Broker)
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	cfg.Broker = broker
	if len(cfg.Topics) == 0 {
		return nil, errors.New("watch: no topics to subscribe to")
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Subscriber{cfg: cfg, log: log, msgs: make(chan Message, 4096), conn: make(chan ConnMsg, 16), done: make(chan struct{})}
	host, _ := os.Hostname()
	opts := mqtt.NewClientOptions().
		AddBroker(broker).
		// A watcher is a throw-away client: unique id, clean session.
		SetClientID(clientID(host, os.Getpid(), time.Now())).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(cfg.RetryMax).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetOrderMatters(false)
	if err := publish.Secure(opts, broker, cfg.Credentials); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	handler := func(_ mqtt.Client, m mqtt.Message) {
		select {
		case s.msgs <- Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...), At: time.Now()}:
		case <-s.done:
		}
	}
	opts.SetOnConnectHandler(func(c mqtt.Client) {
		filters := map[string]byte{}
		for _, t := range cfg.Topics {
			filters[t] = 0
		}
		// The subscription is renewed on every connection: the session is
		// clean, and the retained status topics arrive again with it.
		tok := c.SubscribeMultiple(filters, handler)
		go func() {
			if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				s.report(ConnMsg{Connected: true})
				return
			}
			err := tok.Error()
			if err == nil {
				err = errors.New("no answer to SUBSCRIBE")
			}
			s.report(ConnMsg{Err: "subscribe: " + err.Error()})
		}()
	})
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		s.report(ConnMsg{Err: err.Error()})
	})
	opts.SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) {
		s.report(ConnMsg{Err: "reconnecting"})
	})
	s.client = mqtt.NewClient(opts)
	return s, nil
}

func clientID(host string, pid int, now time.Time) string {
	id := fmt.Sprintf("fg-watch-%s-%d-%d", host, pid, now.UnixNano()%1e6)
	if len(id) > 64 {
		id = id[:64]
	}
	return id
}

func (s *Subscriber) report(c ConnMsg) {
	select {
	case s.conn <- c:
	default: // a burst of state changes: the latest ones are enough
	}
}

// Run connects (retrying with back-off, each failure reported as a ConnMsg),
// then hands the messages to send in batches of at most FlushInterval, until
// ctx is cancelled.
func (s *Subscriber) Run(ctx context.Context, send func(tea.Msg)) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		wait := time.Second
		for {
			tok := s.client.Connect()
			select {
			case <-gctx.Done():
				return nil
			case <-tok.Done():
			}
			if tok.Error() == nil {
				return nil
			}
			s.log.Debug("watch: connect failed", "broker", s.cfg.Broker, "err", tok.Error())
			s.report(ConnMsg{Err: tok.Error().Error()})
			select {
			case <-gctx.Done():
				return nil
			case <-time.After(wait):
			}
			wait = min(2*wait, s.cfg.RetryMax)
		}
	})
	g.Go(func() error {
		defer func() {
			close(s.done)
			s.client.Disconnect(250)
		}()
		t := time.NewTicker(s.cfg.FlushInterval)
		defer t.Stop()
		var batch MessagesMsg
		for {
			select {
			case <-gctx.Done():
				return nil
			case c := <-s.conn:
				send(c)
			case m := <-s.msgs:
				batch = append(batch, m)
			case <-t.C:
				if len(batch) > 0 {
					send(batch)
					batch = nil
				}
			}
		}
	})
	return g.Wait()
}
