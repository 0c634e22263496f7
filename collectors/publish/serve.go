package publish

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"
)

// Source is a collector's engine: it produces batches into the publisher
// until its context ends.
type Source interface {
	Run(ctx context.Context) error
}

// Serve runs the publisher and a collector's engine together, the way every
// collector command does: when ctx ends the engine stops first, then the
// publisher gets its StopTimeout to have the window acknowledged; a failure
// of either stops both. Serve returns within stopDeadline of ctx ending.
func (p *Publisher) Serve(ctx context.Context, src Source, stopDeadline time.Duration) error {
	return Serve(ctx, p, src, stopDeadline, p.log)
}

// Serve runs an output (the Publisher, a Sparkplug edge node) and a
// collector's engine together as Publisher.Serve describes.
func Serve(ctx context.Context, out Source, src Source, stopDeadline time.Duration, log *slog.Logger) error {
	g, gctx := errgroup.WithContext(ctx)
	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(gctx))
	defer stopPub()
	g.Go(func() error { return out.Run(pubCtx) })
	g.Go(func() error {
		defer stopPub()
		return src.Run(gctx)
	})
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	log.Info("stopping", "deadline", stopDeadline)
	select {
	case err := <-done:
		return err
	case <-time.After(stopDeadline):
		return fmt.Errorf("stop: not finished within %v", stopDeadline)
	}
}
