package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
	"golang.org/x/sync/errgroup"

	"fieldgate/gateway/supervisor"
)

// DefaultSupervisorEvery is how often Config.Supervisor is polled.
const DefaultSupervisorEvery = 2 * time.Second

// Config is one watch session.
type Config struct {
	Subscriber SubscriberConfig
	// Prefix is the topic root (default "fieldgate"); Gateway the gateway
	// id, or "" for every gateway under Prefix.
	Prefix, Gateway string
	// Intervals are the collectors' poll intervals, when known.
	Intervals map[string]time.Duration
	// StaleAfter, when positive, replaces StaleFactor × the interval.
	StaleAfter time.Duration
	// Supervisor, when set, reads the supervisor's /status every
	// SupervisorEvery (default DefaultSupervisorEvery).
	Supervisor      func(context.Context) (supervisor.Status, error)
	SupervisorEvery time.Duration
	Log             *slog.Logger
}

func (c *Config) state() *State {
	if c.Prefix == "" {
		c.Prefix = "fieldgate"
	}
	if c.SupervisorEvery <= 0 {
		c.SupervisorEvery = DefaultSupervisorEvery
	}
	st := NewState(c.Prefix, c.Gateway, c.Intervals, c.StaleAfter)
	c.Subscriber.Topics = st.Topics()
	return st
}

// Run shows the live view on a terminal (in, out) until the user quits or
// ctx is cancelled. It returns the broker configuration's error, if any,
// before it takes over the terminal.
func Run(ctx context.Context, cfg Config, in io.Reader, out io.Writer) error {
	st := cfg.state()
	sub, err := NewSubscriber(cfg.Subscriber, cfg.Log)
	if err != nil {
		return err
	}
	r := lipgloss.NewRenderer(out)
	m := NewModel(st, sub.cfg.Broker, time.Now(), WithRenderer(r))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out), tea.WithAltScreen())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sub.Run(gctx, p.Send) })
	if cfg.Supervisor != nil {
		g.Go(func() error { return pollSupervisor(gctx, cfg, p.Send) })
	}
	_, runErr := p.Run()
	cancel()
	if err := g.Wait(); err != nil {
		return err
	}
	if runErr != nil && !errors.Is(runErr, tea.ErrProgramKilled) {
		return fmt.Errorf("watch: terminal: %w", runErr)
	}
	return nil
}

func pollSupervisor(ctx context.Context, cfg Config, send func(tea.Msg)) error {
	t := time.NewTicker(cfg.SupervisorEvery)
	defer t.Stop()
	for {
		st, err := cfg.Supervisor(ctx)
		if ctx.Err() != nil {
			return nil
		}
		send(SupervisorMsg{Status: st, Err: err, At: time.Now()})
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Snapshot listens for d, then writes the view once as plain text to out:
// the view for scripts and for output that is not a terminal. It fails if
// the broker could not be reached in that time.
func Snapshot(ctx context.Context, cfg Config, d time.Duration, out io.Writer) error {
	st := cfg.state()
	sub, err := NewSubscriber(cfg.Subscriber, cfg.Log)
	if err != nil {
		return err
	}
	r := lipgloss.NewRenderer(out, termenv.WithProfile(termenv.Ascii))
	var m tea.Model = NewModel(st, sub.cfg.Broker, time.Now(), WithRenderer(r))
	msgs := make(chan tea.Msg, 64)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	send := func(msg tea.Msg) {
		select {
		case msgs <- msg:
		case <-gctx.Done():
		}
	}
	g.Go(func() error { return sub.Run(gctx, send) })
	if cfg.Supervisor != nil {
		g.Go(func() error { return pollSupervisor(gctx, cfg, send) })
	}
	var conn ConnMsg
loop:
	for {
		select {
		case <-gctx.Done():
			break loop
		case msg := <-msgs:
			if c, ok := msg.(ConnMsg); ok {
				conn = c
			}
			m, _ = m.Update(msg)
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	m, _ = m.Update(TickMsg(time.Now()))
	if _, err := io.WriteString(out, m.View()+"\n"); err != nil {
		return err
	}
	if !conn.Connected && st.Len() == 0 {
		reason := conn.Err
		if reason == "" {
			reason = "no answer"
		}
		return fmt.Errorf("watch: broker %s not reached in %v: %s", sub.cfg.Broker, d, reason)
	}
	return nil
}
