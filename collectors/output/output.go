// Package output is the MQTT side every collector command sets up the same
// way: the JSON contract (package publish) or a Sparkplug B edge node
// (package sparkplug), as MQTT_PAYLOAD says, and the write commands of
// writable tags routed to the collector's engine — JSON requests on
// {prefix}/{gateway}/cmd/{collector}/{device} answered on
// …/cmd-reply/{collector}/{device}, or Sparkplug DCMD.
package output

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"fieldgate/collectors/command"
	"fieldgate/collectors/publish"
	"fieldgate/collectors/reading"
	"fieldgate/collectors/runenv"
	"fieldgate/collectors/sparkplug"
)

// replyTimeout bounds the publication of one command reply.
const replyTimeout = 10 * time.Second

// runner is what both outputs are: a collector's Sink that runs.
type runner interface {
	Publish(ctx context.Context, b reading.Batch) error
	SetDeviceStatus(device, status string)
	Run(ctx context.Context) error
}

// Output is a collector's MQTT output. It is the engine's Sink.
type Output struct {
	out    runner
	pub    *publish.Publisher // JSON contract, or
	node   *sparkplug.Node    // Sparkplug B
	schema []reading.Device
	log    *slog.Logger
}

// New opens the output MQTT_PAYLOAD selects for a collector whose devices
// and tags are schema. It does not connect: Serve does.
func New(env runenv.Env, version string, schema []reading.Device, log *slog.Logger) (*Output, error) {
	o := &Output{schema: schema, log: log}
	if env.Payload == runenv.PayloadSparkplug {
		n, err := sparkplug.New(sparkplug.ConfigFromEnv(env, version), schema, log)
		if err != nil {
			return nil, err
		}
		o.node, o.out = n, n
		return o, nil
	}
	p, err := publish.New(publish.ConfigFromEnv(env, version), log)
	if err != nil {
		return nil, err
	}
	o.pub, o.out = p, p
	return o, nil
}

// Publish implements the engines' Sink.
func (o *Output) Publish(ctx context.Context, b reading.Batch) error { return o.out.Publish(ctx, b) }

// SetDeviceStatus implements the engines' Sink.
func (o *Output) SetDeviceStatus(device, status string) { o.out.SetDeviceStatus(device, status) }

// SetTagType passes on a tag type the engine learnt from its device (an
// OPC UA node's DataType): Sparkplug births need it.
func (o *Output) SetTagType(device, tag string, t reading.DataType) {
	if o.node != nil {
		o.node.SetTagType(device, tag, t)
	}
}

// Run runs the output alone (Serve runs it with an engine).
func (o *Output) Run(ctx context.Context) error { return o.out.Run(ctx) }

// EnableWrites routes write commands to w when any tag is writable; with
// none, nothing is subscribed and every command is left unheard. Call it
// before Serve.
func (o *Output) EnableWrites(w command.Writer) error {
	h, err := command.NewHandler(o.schema, w, o.log)
	if err != nil {
		return fmt.Errorf("commands: %w", err)
	}
	if !h.Writable() {
		return nil
	}
	if o.node != nil {
		o.node.HandleCommands(h)
		return nil
	}
	p := o.pub
	p.Handle(p.Topic("cmd", "+"), func(topic string, payload []byte, retained bool) {
		if retained {
			// A retained command would run again at every reconnect.
			o.log.Warn("retained command ignored", "topic", topic)
			return
		}
		device := topic[strings.LastIndexByte(topic, '/')+1:]
		reply := h.HandleJSON(context.Background(), device, payload)
		if err := p.Send(p.Topic("cmd-reply", device), reply, replyTimeout); err != nil {
			o.log.Warn("command reply not published", "device", device, "err", err)
		}
	})
	return nil
}

// Serve runs the output and the engine src until ctx ends (see
// publish.Serve).
func (o *Output) Serve(ctx context.Context, src publish.Source, stopDeadline time.Duration) error {
	return publish.Serve(ctx, o.out, src, stopDeadline, o.log)
}
