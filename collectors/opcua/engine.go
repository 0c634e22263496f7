package opcua

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uacp"

	"fieldgate/collectors/rbe"
	"fieldgate/collectors/reading"
)

// Sink receives the collector's output; fieldgate/collectors/publish's
// Publisher implements it.
type Sink interface {
	// Publish hands over one device's batch (one MQTT data message). It
	// must not keep b.Readings after it returns: the engine reuses the
	// slice for the device's next batch (copy what is kept).
	Publish(ctx context.Context, b reading.Batch) error
	// SetDeviceStatus sets a device's entry in the collector status: "ok"
	// or "error: <reason>".
	SetDeviceStatus(device, status string)
}

// Defaults of the engine's options.
const (
	DefaultPollInterval = 5 * time.Second
	DefaultBackoffMin   = 500 * time.Millisecond
	// The back-off cap defaults to five POLL_INTERVALs, kept within
	// [5s, 60s]: after an outage readings resume within a few publishing
	// intervals, while a server that stays away is not hammered.
	minBackoffCap    = 5 * time.Second
	maxBackoffCap    = 60 * time.Second
	DefaultItemRetry = 30 * time.Second
	// DefaultBatch is the number of items per CreateMonitoredItems or Read
	// request when the server states no limit (or a larger one): small
	// enough that no request or response approaches a server's message size.
	DefaultBatch = 1000
	// DefaultItemsPerSubscription caps the monitored items of one
	// subscription (whole devices are kept together).
	DefaultItemsPerSubscription = 1000
	// ApplicationURI is the client's application URI, also written into the
	// generated client certificate.
	ApplicationURI = "urn:fieldgate:opcua-collector"
)

// Option configures an Engine.
type Option func(*options)

type options struct {
	log        *slog.Logger
	dataDir    string
	poll       time.Duration
	backoffMin time.Duration
	backoffMax time.Duration
	itemRetry  time.Duration
	maxBatch   int
	maxPerSub  int
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithDataDir sets DATA_DIR, where the generated client certificate
// (pki/own), the trust directory (pki/trusted) and rejected server
// certificates (pki/rejected) live. Default "." .
func WithDataDir(dir string) Option { return func(o *options) { o.dataDir = dir } }

// WithPollInterval sets POLL_INTERVAL: the sampling interval of monitored
// items, the default publishing interval, and the read period in poll mode.
// Default 5s.
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.poll = d } }

// WithBackoff sets the reconnect back-off: it starts at min and doubles up
// to max, and is reset once a session is up. Defaults: 500ms, and five
// POLL_INTERVALs kept within [5s, 60s].
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.backoffMin, o.backoffMax = min, max }
}

// WithItemRetry sets how often monitored items the server rejected are
// tried again (default 30s).
func WithItemRetry(d time.Duration) Option { return func(o *options) { o.itemRetry = d } }

// WithMaxBatch caps the items per CreateMonitoredItems / Read request below
// the server's own limits (default DefaultBatch).
func WithMaxBatch(n int) Option { return func(o *options) { o.maxBatch = n } }

// WithMaxItemsPerSubscription caps the monitored items per subscription
// (default DefaultItemsPerSubscription); a device with more tags gets one
// subscription of its own.
func WithMaxItemsPerSubscription(n int) Option { return func(o *options) { o.maxPerSub = n } }

// tag is one configured node.
type tag struct {
	handle   uint32 // client handle of its monitored item: index+1
	device   string
	dev      int // index of device in Engine.devices (and of its slot in a cycle)
	name     string
	unit     string
	id       *ua.NodeID
	deadband *Deadband
	sampling time.Duration
	writable bool
	dtype    reading.DataType // from the server's DataType attribute; guarded by Engine.live
}

// Engine collects the configured nodes of one OPC UA server.
type Engine struct {
	cfg     Config
	sink    Sink
	log     *slog.Logger
	opt     options
	tags    []*tag
	devices []string // in order of first appearance
	byDev   map[string][]*tag

	own      keyPair // client application instance certificate
	userCert keyPair // for certificate user tokens
	password string
	trust    *trustStore
	lim      Limits // cfg.Limits with defaults

	// filter applies report by exception; nil when every tag publishes
	// whatever the engine reads.
	filter *rbe.Filter
	byKey  map[string]*tag // device "\x00" name

	live    sync.Mutex
	client  *opcua.Client // the session's client, for writes; nil while down
	downErr error         // why there is no session
}

// New validates cfg, loads (or generates, once, into DATA_DIR/pki/own) the
// client certificate, reads the password file and returns an engine ready
// to Run.
func New(cfg Config, sink Sink, opts ...Option) (*Engine, error) {
	o := options{
		dataDir:    ".",
		poll:       DefaultPollInterval,
		backoffMin: DefaultBackoffMin,
		itemRetry:  DefaultItemRetry,
		maxBatch:   DefaultBatch,
		maxPerSub:  DefaultItemsPerSubscription,
	}
	for _, f := range opts {
		f(&o)
	}
	if o.backoffMax == 0 {
		o.backoffMax = min(max(5*o.poll, minBackoffCap), maxBackoffCap)
	}
	if o.log == nil {
		o.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch {
	case sink == nil:
		return nil, errors.New("opcua: nil sink")
	case o.poll <= 0:
		return nil, fmt.Errorf("opcua: poll interval must be positive, got %s", o.poll)
	case o.backoffMin <= 0 || o.backoffMax < o.backoffMin:
		return nil, fmt.Errorf("opcua: invalid back-off %s..%s", o.backoffMin, o.backoffMax)
	case o.itemRetry <= 0:
		return nil, fmt.Errorf("opcua: item retry interval must be positive, got %s", o.itemRetry)
	case o.maxBatch <= 0:
		return nil, fmt.Errorf("opcua: max batch must be positive, got %d", o.maxBatch)
	case o.maxPerSub <= 0:
		return nil, fmt.Errorf("opcua: max items per subscription must be positive, got %d", o.maxPerSub)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newEngine(cfg, sink, o)
}

// newEngine builds an engine from a validated config.
func newEngine(cfg Config, sink Sink, o options) (*Engine, error) {
	cfg = cfg.withDefaults(o.poll)
	e := &Engine{cfg: cfg, sink: sink, log: o.log, opt: o, byDev: map[string][]*tag{}, byKey: map[string]*tag{},
		lim: cfg.Limits.withDefaults()}
	tolerance := o.poll / 2
	if cfg.Mode != ModePoll {
		tolerance = 0 // heartbeats come from a timer, not from polls
	}
	if f := rbe.New(cfg.rules(), rbe.WithTolerance(tolerance)); f.Active() {
		e.filter = f
	}
	devIndex := map[string]int{}
	for i, n := range cfg.Nodes {
		nid, _ := ua.ParseNodeID(n.NodeID) // validated above
		t := &tag{handle: uint32(i + 1), device: n.Device, name: n.Name, unit: n.Unit, id: nid,
			deadband: n.Deadband, sampling: n.SamplingInterval.D(), writable: n.Limits.Writable}
		e.byKey[t.device+"\x00"+t.name] = t
		if t.sampling == 0 {
			t.sampling = o.poll
		}
		e.tags = append(e.tags, t)
		dev, ok := devIndex[t.device]
		if !ok {
			dev = len(e.devices)
			devIndex[t.device] = dev
			e.devices = append(e.devices, t.device)
		}
		t.dev = dev
		e.byDev[t.device] = append(e.byDev[t.device], t)
	}

	pki := filepath.Join(o.dataDir, "pki")
	trustDir := cfg.TrustDir
	if trustDir == "" {
		trustDir = filepath.Join(pki, "trusted")
	}
	e.trust = &trustStore{dir: trustDir, rejectedDir: filepath.Join(pki, "rejected")}
	if cfg.Security != nil && cfg.Security.ServerCert != "" {
		certs, err := readCerts(cfg.Security.ServerCert)
		if err != nil {
			return nil, fmt.Errorf("opcua: security.server_cert: %w", err)
		}
		e.trust.pinned = certs[0]
	}
	if cfg.Security == nil || cfg.Security.Policy != PolicyNone {
		// The trust directory is created so the engineer finds where to
		// put certificates.
		if err := os.MkdirAll(trustDir, 0o755); err != nil {
			return nil, fmt.Errorf("opcua: trust directory: %w", err)
		}
		own, err := ownCertificate(cfg.Security, filepath.Join(pki, "own"), ApplicationURI)
		if err != nil {
			return nil, fmt.Errorf("opcua: client certificate: %w", err)
		}
		e.own = own
	}
	if a := cfg.Auth; a != nil {
		switch a.kind() {
		case ua.UserTokenTypeUserName:
			b, err := os.ReadFile(a.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("opcua: auth.password_file: %w", err)
			}
			e.password = strings.TrimRight(string(b), "\r\n")
		case ua.UserTokenTypeCertificate:
			kp, err := loadKeyPair(a.CertFile, a.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("opcua: auth: %w", err)
			}
			e.userCert = kp
		}
	}
	return e, nil
}

// Run collects until ctx is cancelled, reconnecting with capped
// exponential back-off whenever the connection, the session or the
// subscription fails. It returns nil after ctx is cancelled.
func (e *Engine) Run(ctx context.Context) error {
	backoff := e.opt.backoffMin
	for {
		up, err := e.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if up {
			backoff = e.opt.backoffMin
		}
		e.log.Warn("opcua session ended", "endpoint", e.cfg.Endpoint, "err", err, "retry_in", backoff)
		e.reportDown(ctx, err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, e.opt.backoffMax)
	}
}

// reportDown publishes, for every device, a batch with all its tags bad and
// the reason, and sets the device status, so subscribers see the fault.
func (e *Engine) reportDown(ctx context.Context, err error) {
	reason := errorText(err)
	now := time.Now()
	for _, d := range e.devices {
		b := reading.Batch{Device: d, TS: now}
		for _, t := range e.byDev[d] {
			b.Readings = append(b.Readings, reading.Reading{Tag: t.name, Unit: t.unit, Quality: reading.Bad, Error: reason, TS: now})
		}
		e.publish(ctx, b)
		e.sink.SetDeviceStatus(d, "error: "+reason)
	}
}

func (e *Engine) publish(ctx context.Context, b reading.Batch) {
	if e.filter != nil && !e.filter.Apply(&b) {
		return // report by exception: nothing due
	}
	if err := e.sink.Publish(ctx, b); err != nil && ctx.Err() == nil {
		e.log.Error("publish batch", "device", b.Device, "err", err)
	}
}

// timing derives the subscription and request timing from the publishing
// interval.
type timing struct {
	publishing time.Duration
	keepAlive  uint32        // requested max keep-alive count
	lifetime   uint32        // requested lifetime count
	request    time.Duration // request timeout (and timeout hint)
}

func (e *Engine) timing() timing {
	pub := e.cfg.PublishingInterval.D()
	// A keep-alive about every 5 s (at least every publishing cycle) lets a
	// dead subscription be noticed quickly without chatter.
	ka := uint32(max(1, (5*time.Second+pub-1)/pub))
	period := time.Duration(ka) * pub
	return timing{
		publishing: pub,
		keepAlive:  ka,
		lifetime:   max(3*ka, uint32(max(1, time.Minute/pub))),
		// Several Publish requests wait at the server at once; each may
		// be held for up to about two keep-alive periods.
		request: max(10*time.Second, 3*period+2*pub),
	}
}

// connect discovers the endpoints, chooses one per the security config,
// checks the server certificate against the trust store and opens a
// session.
func (e *Engine) connect(ctx context.Context) (*opcua.Client, error) {
	tm := e.timing()
	dctx, cancel := context.WithTimeout(ctx, tm.request)
	defer cancel()
	eps, err := opcua.GetEndpoints(dctx, e.cfg.Endpoint, e.dialer(tm.request), opcua.RequestTimeout(tm.request))
	if err != nil {
		return nil, fmt.Errorf("get endpoints of %s: %w", e.cfg.Endpoint, err)
	}
	ep, err := selectEndpoint(eps, e.cfg.Security)
	if err != nil {
		return nil, err
	}
	authType := e.cfg.Auth.kind()
	// The server certificate is checked whenever something is encrypted
	// with it: the channel, or a password sent over a channel without
	// security.
	if ep.SecurityPolicyURI != ua.SecurityPolicyURINone || encryptsToken(ep, authType) {
		if err := e.trust.check(ep.ServerCertificate); err != nil {
			return nil, err
		}
	}
	if !offersToken(ep, authType) {
		return nil, fmt.Errorf("endpoint %s/%s does not accept %s user tokens (accepts: %s)",
			policyName(ep.SecurityPolicyURI), secModeName(ep.SecurityMode), tokenName(authType), tokenNames(ep))
	}
	if authType == ua.UserTokenTypeUserName {
		// gopcua uses the first token policy of the type: offer it only the
		// one that protects the password best.
		tok := userTokenPolicy(ep)
		if passwordInClear(ep, tok) && !e.cfg.Auth.AllowPlaintextPassword {
			return nil, fmt.Errorf("endpoint %s/%s would receive the password of user %q in clear (user token policy %s); refusing: choose a secured endpoint, or set auth.allow_plaintext_password: true",
				policyName(ep.SecurityPolicyURI), secModeName(ep.SecurityMode), e.cfg.Auth.Username, policyName(tokenPolicyURI(ep, tok)))
		}
		only := *ep
		only.UserIdentityTokens = []*ua.UserTokenPolicy{tok}
		ep = &only
	}
	opts := []opcua.Option{
		opcua.AutoReconnect(false), // the engine reconnects and restores items itself
		opcua.ApplicationURI(ApplicationURI),
		opcua.ApplicationName("fieldgate opcua-collector"),
		opcua.ProductURI("urn:fieldgate"),
		opcua.SessionName("fieldgate"),
		opcua.SessionTimeout(max(time.Minute, 4*tm.request)),
		opcua.RequestTimeout(tm.request),
		e.dialer(tm.request),
	}
	if e.own.cert != nil {
		opts = append(opts, opcua.Certificate(e.own.cert), opcua.PrivateKey(e.own.key))
	}
	switch authType {
	case ua.UserTokenTypeUserName:
		opts = append(opts, opcua.AuthUsername(e.cfg.Auth.Username, e.password))
	case ua.UserTokenTypeCertificate:
		opts = append(opts, opcua.AuthCertificate(e.userCert.cert), opcua.AuthPrivateKey(e.userCert.key))
	default:
		opts = append(opts, opcua.AuthAnonymous())
	}
	opts = append(opts, opcua.SecurityFromEndpoint(ep, authType))
	c, err := opcua.NewClient(e.cfg.Endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("opc ua client: %w", err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 2*tm.request)
	defer ccancel()
	if err := c.Connect(cctx); err != nil {
		return nil, fmt.Errorf("connect to %s (%s/%s, %s): %w", e.cfg.Endpoint,
			policyName(ep.SecurityPolicyURI), secModeName(ep.SecurityMode), tokenName(authType), err)
	}
	e.log.Info("opcua session up", "endpoint", e.cfg.Endpoint, "policy", policyName(ep.SecurityPolicyURI),
		"mode", secModeName(ep.SecurityMode), "auth", tokenName(authType))
	return c, nil
}

// dialer states the collector's transport limits in the Hello (a dialer of
// its own: gopcua's size options write into a package-level default shared
// by every client). A conforming server sends no chunk larger than 64 KiB
// and no message larger than limits.max_message_bytes; a response that
// would be larger is refused with BadResponseTooLarge instead.
func (e *Engine) dialer(timeout time.Duration) opcua.Option {
	return opcua.Dialer(&uacp.Dialer{Dialer: &net.Dialer{Timeout: timeout}, ClientACK: e.lim.hello()})
}

// userTokenPolicy is the user name token policy of ep to use: one with a
// security policy of its own (the password is encrypted with the server's
// certificate) before one that relies on the channel.
func userTokenPolicy(ep *ua.EndpointDescription) *ua.UserTokenPolicy {
	var first *ua.UserTokenPolicy
	for _, p := range ep.UserIdentityTokens {
		if p == nil || p.TokenType != ua.UserTokenTypeUserName {
			continue
		}
		if first == nil {
			first = p
		}
		if p.SecurityPolicyURI != "" && p.SecurityPolicyURI != ua.SecurityPolicyURINone {
			return p
		}
	}
	return first
}

// tokenPolicyURI is the security policy that protects a token: the token
// policy's own, or the endpoint's when it states none (Part 4, 7.41).
func tokenPolicyURI(ep *ua.EndpointDescription, tok *ua.UserTokenPolicy) string {
	if tok != nil && tok.SecurityPolicyURI != "" {
		return tok.SecurityPolicyURI
	}
	return ep.SecurityPolicyURI
}

// passwordInClear reports whether a password sent with token policy tok
// on ep is readable on the wire: not encrypted for the server, and the
// channel does not encrypt either.
func passwordInClear(ep *ua.EndpointDescription, tok *ua.UserTokenPolicy) bool {
	return tokenPolicyURI(ep, tok) == ua.SecurityPolicyURINone && ep.SecurityMode != ua.MessageSecurityModeSignAndEncrypt
}

// encryptsToken reports whether a user token of type t is encrypted with the
// server's certificate on this endpoint (a token policy of its own).
func encryptsToken(ep *ua.EndpointDescription, t ua.UserTokenType) bool {
	if t != ua.UserTokenTypeUserName {
		return false
	}
	for _, p := range ep.UserIdentityTokens {
		if p.TokenType == t && p.SecurityPolicyURI != "" && p.SecurityPolicyURI != ua.SecurityPolicyURINone {
			return true
		}
	}
	return false
}

func offersToken(ep *ua.EndpointDescription, t ua.UserTokenType) bool {
	for _, p := range ep.UserIdentityTokens {
		if p.TokenType == t {
			return true
		}
	}
	return false
}

func tokenName(t ua.UserTokenType) string {
	switch t {
	case ua.UserTokenTypeAnonymous:
		return "anonymous"
	case ua.UserTokenTypeUserName:
		return "user name"
	case ua.UserTokenTypeCertificate:
		return "certificate"
	}
	return "issued"
}

func tokenNames(ep *ua.EndpointDescription) string {
	var s []string
	for _, p := range ep.UserIdentityTokens {
		s = append(s, tokenName(p.TokenType))
	}
	return strings.Join(s, ", ")
}

// closeClient closes the session and channel with a deadline: a frozen
// server must not hold the engine.
func closeClient(c *opcua.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c.Close(ctx)
}

// session runs one session: connect, then collect until something fails.
// up reports whether the session was established.
func (e *Engine) session(ctx context.Context) (up bool, err error) {
	c, err := e.connect(ctx)
	if err != nil {
		e.setClient(nil, err)
		return false, err
	}
	defer closeClient(c)
	lim := e.limits(ctx, c)
	e.readTypes(ctx, c, lim.perRead)
	e.setClient(c, nil)
	defer func() { e.setClient(nil, err) }()
	if e.cfg.Mode == ModePoll {
		return true, e.runPoll(ctx, c, lim)
	}
	return true, e.runSubscribe(ctx, c, lim)
}

// limits are the batch sizes the engine uses with this server.
type limits struct {
	perCall int // monitored items per CreateMonitoredItems
	perRead int // nodes per Read
}

// limits reads the server's OperationLimits; a missing, zero (no limit) or
// larger value is replaced by the engine's max batch.
func (e *Engine) limits(ctx context.Context, c *opcua.Client) limits {
	l := limits{perCall: e.opt.maxBatch, perRead: e.opt.maxBatch}
	rctx, cancel := context.WithTimeout(ctx, e.timing().request)
	defer cancel()
	res, err := c.Read(rctx, &ua.ReadRequest{
		NodesToRead: []*ua.ReadValueID{
			{NodeID: ua.NewNumericNodeID(0, id.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall), AttributeID: ua.AttributeIDValue},
			{NodeID: ua.NewNumericNodeID(0, id.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead), AttributeID: ua.AttributeIDValue},
		},
		TimestampsToReturn: ua.TimestampsToReturnNeither,
	})
	if err != nil || len(res.Results) != 2 {
		e.log.Debug("opcua operation limits unavailable, using defaults", "err", err)
		return l
	}
	pick := func(dv *ua.DataValue, cur int) int {
		if dv == nil || dv.Status != ua.StatusOK || dv.Value == nil {
			return cur
		}
		if n, ok := dv.Value.Value().(uint32); ok && n > 0 && int(n) < cur {
			return int(n)
		}
		return cur
	}
	l.perCall = pick(res.Results[0], l.perCall)
	l.perRead = pick(res.Results[1], l.perRead)
	e.log.Debug("opcua batch sizes", "monitored_items_per_call", l.perCall, "nodes_per_read", l.perRead)
	return l
}

// asStatus reports whether err is (or wraps) an OPC UA status code.
func asStatus(err error, s *ua.StatusCode) bool {
	return err != nil && errors.As(err, s)
}

// cycle holds the readings of one publishing or poll cycle by device:
// entry i is the device Engine.devices[i] (tag.dev). Indexing by position
// rather than by name keeps two string-keyed map operations per
// notification off the subscribe path (about a tenth of the engine's CPU
// with 50,000 items).
type cycle [][]reading.Reading

// newCycle is an empty cycle for every device.
func (e *Engine) newCycle() cycle { return make(cycle, len(e.devices)) }

// flush publishes the readings gathered per device as one batch per device,
// in configuration order.
func (e *Engine) flush(ctx context.Context, ts time.Time, got cycle) {
	for i, d := range e.devices {
		rs := got[i]
		if len(rs) == 0 {
			continue
		}
		e.publish(ctx, reading.Batch{Device: d, TS: ts, Readings: rs})
	}
}
