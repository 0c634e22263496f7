package opcua

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"fieldgate/collectors/reading"
)

func TestConvertValue(t *testing.T) {
	ts := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   any
		want any
	}{
		{true, true},
		{int8(-3), int64(-3)},
		{int16(-300), int64(-300)},
		{int32(-70000), int64(-70000)},
		{int64(-1) << 40, int64(-1) << 40},
		{uint8(200), uint64(200)},
		{uint16(65000), uint64(65000)},
		{uint32(4000000000), uint64(4000000000)},
		{uint64(1) << 63, uint64(1) << 63},
		{float32(230.1), 230.1},
		{1.5, 1.5},
		{"text", "text"},
		{ts, "2026-11-28T12:00:00Z"},
		{[]byte{1, 2, 3}, "AQID"},
		{ua.NewLocalizedText("hello"), "hello"},
		{&ua.QualifiedName{NamespaceIndex: 2, Name: "q"}, "q"},
		{ua.NewStringNodeID(2, "x"), "ns=2;s=x"},
		{ua.StatusBadNodeIDUnknown, "BadNodeIdUnknown"},
		{[]float64{1, 2}, "[1,2]"},
		{nil, nil},
	} {
		got := convertValue(tc.in)
		if fmt.Sprintf("%T %v", got, got) != fmt.Sprintf("%T %v", tc.want, tc.want) {
			t.Errorf("convertValue(%T %v) = %T %v, want %T %v", tc.in, tc.in, got, got, tc.want, tc.want)
		}
	}
}

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		s    ua.StatusCode
		q    reading.Quality
		name string
	}{
		{ua.StatusOK, reading.Good, "Good"},
		{ua.StatusUncertainLastUsableValue, reading.Uncertain, "UncertainLastUsableValue"},
		{ua.StatusBadNodeIDUnknown, reading.Bad, "BadNodeIdUnknown"},
		{ua.StatusBadTCPEndpointURLInvalid, reading.Bad, "BadTcpEndpointUrlInvalid"},
		{ua.StatusBadUserAccessDenied, reading.Bad, "BadUserAccessDenied"},
		{ua.StatusBadNodeIDUnknown | 0x0400, reading.Bad, "BadNodeIdUnknown"}, // info bits
		{ua.StatusCode(0x80FF0000), reading.Bad, "0x80FF0000"},
	} {
		if q := quality(tc.s); q != tc.q {
			t.Errorf("quality(%#x) = %s, want %s", uint32(tc.s), q, tc.q)
		}
		if n := statusName(tc.s); n != tc.name {
			t.Errorf("statusName(%#x) = %s, want %s", uint32(tc.s), n, tc.name)
		}
	}
	err := fmt.Errorf("connect to x: %w", ua.StatusBadUserAccessDenied)
	if got := errorText(err); got != "connect to x: BadUserAccessDenied" {
		t.Errorf("errorText = %q", got)
	}
	if got := errorText(errors.New("plain")); got != "plain" {
		t.Errorf("errorText = %q", got)
	}
}

func TestMakeReading(t *testing.T) {
	tg := &tag{name: "t", unit: "V"}
	now := time.Now()
	src := now.Add(-time.Second)
	r := makeReading(tg, &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp,
		Value: ua.MustVariant(float32(1.25)), SourceTimestamp: src}, now, DefaultLimits)
	if r.Quality != reading.Good || r.Value != 1.25 || !r.TS.Equal(src) || r.Unit != "V" {
		t.Errorf("good reading = %+v", r)
	}
	r = makeReading(tg, &ua.DataValue{EncodingMask: ua.DataValueStatusCode, Status: ua.StatusBadNodeIDUnknown}, now, DefaultLimits)
	if r.Quality != reading.Bad || r.Value != nil || r.Error != "BadNodeIdUnknown" || !r.TS.Equal(now) {
		t.Errorf("bad reading = %+v", r)
	}
	r = makeReading(tg, &ua.DataValue{EncodingMask: ua.DataValueValue | ua.DataValueStatusCode,
		Value: ua.MustVariant(int32(7)), Status: ua.StatusUncertainLastUsableValue}, now, DefaultLimits)
	if r.Quality != reading.Uncertain || r.Value != int64(7) || r.Error != "UncertainLastUsableValue" {
		t.Errorf("uncertain reading = %+v", r)
	}
}

func ep(policy string, mode ua.MessageSecurityMode, level uint8) *ua.EndpointDescription {
	return &ua.EndpointDescription{SecurityPolicyURI: policyURI(policy), SecurityMode: mode, SecurityLevel: level}
}

func TestSelectEndpoint(t *testing.T) {
	all := []*ua.EndpointDescription{
		ep(PolicyNone, ua.MessageSecurityModeNone, 0),
		ep(PolicyBasic256Sha256, ua.MessageSecurityModeSign, 3),
		ep(PolicyBasic256Sha256, ua.MessageSecurityModeSignAndEncrypt, 4),
		ep(PolicyAes128Sha256RsaOaep, ua.MessageSecurityModeSignAndEncrypt, 5),
		ep("Basic128Rsa15", ua.MessageSecurityModeSignAndEncrypt, 9),
	}
	got, err := selectEndpoint(all, nil)
	if err != nil || policyName(got.SecurityPolicyURI) != PolicyBasic256Sha256 || got.SecurityMode != ua.MessageSecurityModeSignAndEncrypt {
		t.Errorf("default choice = %v, %v; want Basic256Sha256/SignAndEncrypt (deprecated policies never chosen)", got, err)
	}
	got, err = selectEndpoint(all, &Security{Policy: PolicyBasic256Sha256, Mode: SecModeSign})
	if err != nil || got.SecurityMode != ua.MessageSecurityModeSign {
		t.Errorf("explicit choice = %v, %v", got, err)
	}
	got, err = selectEndpoint(all, &Security{Policy: PolicyNone, Mode: SecModeNone})
	if err != nil || got.SecurityMode != ua.MessageSecurityModeNone {
		t.Errorf("explicit None = %v, %v", got, err)
	}
	// None is never picked implicitly.
	_, err = selectEndpoint(all[:2], nil)
	if err == nil || !strings.Contains(err.Error(), "policy None explicitly") || !strings.Contains(err.Error(), "None/None") {
		t.Errorf("only None and Sign offered: err = %v", err)
	}
	_, err = selectEndpoint(all, &Security{Policy: PolicyAes256Sha256RsaPss, Mode: SecModeSignAndEncrypt})
	if err == nil || !strings.Contains(err.Error(), "offered: ") {
		t.Errorf("unavailable policy: err = %v", err)
	}
}

func TestTrustStore(t *testing.T) {
	dir := t.TempDir()
	kp, err := ownCertificate(nil, filepath.Join(dir, "own"), ApplicationURI)
	if err != nil {
		t.Fatal(err)
	}
	// Generated once: a second call loads the same certificate.
	again, err := ownCertificate(nil, filepath.Join(dir, "own"), ApplicationURI)
	if err != nil || string(again.cert) != string(kp.cert) {
		t.Fatalf("second ownCertificate = %v (same cert: %v)", err, string(again.cert) == string(kp.cert))
	}
	ts := &trustStore{dir: filepath.Join(dir, "trusted"), rejectedDir: filepath.Join(dir, "rejected")}
	err = ts.check(kp.cert)
	var ue *UntrustedCertError
	if !errors.As(err, &ue) || ue.SavedAs == "" || !strings.Contains(err.Error(), ts.dir) || !strings.Contains(err.Error(), "fieldgate opcua-collector") {
		t.Fatalf("check untrusted = %v", err)
	}
	if err := os.MkdirAll(ts.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(ue.SavedAs, filepath.Join(ts.dir, "server.der")); err != nil {
		t.Fatal(err)
	}
	if err := ts.check(kp.cert); err != nil {
		t.Errorf("check after trusting = %v", err)
	}
}

func TestApplyEnv(t *testing.T) {
	env := map[string]string{
		EnvEndpoint: "opc.tcp://plc:4840",
		EnvMode:     "poll",
		EnvSecurity: "None",
		EnvNodes:    "boiler1/temperature=ns=2;s=Boiler1.Temperature, boiler1/running=ns=2;s=Boiler1.Running",
	}
	var c Config
	if err := c.ApplyEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if c.Endpoint != "opc.tcp://plc:4840" || c.Mode != ModePoll || c.Security.Policy != PolicyNone || c.Security.Mode != SecModeNone {
		t.Errorf("config = %+v", c)
	}
	if len(c.Nodes) != 2 || c.Nodes[1].Device != "boiler1" || c.Nodes[1].Name != "running" || c.Nodes[1].NodeID != "ns=2;s=Boiler1.Running" {
		t.Errorf("nodes = %+v", c.Nodes)
	}
	for _, bad := range []map[string]string{
		{EnvEndpoint: "opc.tcp://x:1", EnvNodes: "nodevice=i=85"},
		{EnvEndpoint: "opc.tcp://x:1", EnvNodes: "d/t=i=85", EnvSecurity: "Basic256Sha256"},
		{EnvEndpoint: "opc.tcp://x:1", EnvNodes: "d/t=ns=x"},
		{EnvEndpoint: "opc.tcp://x:1"},
	} {
		var c Config
		if err := c.ApplyEnv(func(k string) string { return bad[k] }); err == nil {
			t.Errorf("ApplyEnv(%v) = nil, want an error", bad)
		}
	}
}

// TestMakeReadingLimits: a value over a limit is one bad reading naming the
// limit; a value at the limit is good.
func TestMakeReadingLimits(t *testing.T) {
	lim := Limits{MaxStringBytes: 10, MaxByteStringBytes: 4, MaxArrayLength: 3, MaxMessageBytes: 1 << 20}
	xml := ua.XMLElement("<a>12345678</a>")
	tests := []struct {
		name  string
		value any
		want  string // "" for a good reading
	}{
		{"string at the limit", "0123456789", ""},
		{"string over", "0123456789a", "string of 11 bytes is larger than limits.max_string_bytes (10)"},
		{"bytes at the limit", []byte{1, 2, 3, 4}, ""},
		{"bytes over", []byte{1, 2, 3, 4, 5}, "ByteString of 5 bytes is larger than limits.max_bytestring_bytes (4)"},
		{"array at the limit", []float64{1, 2, 3}, ""},
		{"array over", []float64{1, 2, 3, 4}, "array of 4 elements is larger than limits.max_array_length (3)"},
		{"array of strings whose text is too long", []string{"aaaa", "bbbb", "cccc"}, "value's text of 22 bytes is larger than limits.max_string_bytes (10)"},
		{"xml over", xml, "XmlElement of 15 bytes is larger than limits.max_string_bytes (10)"},
		{"localized text over", &ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: "a long text"}, "LocalizedText of 11 bytes"},
		{"number", 12.5, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := makeReading(&tag{name: "t"}, &ua.DataValue{EncodingMask: ua.DataValueValue, Value: ua.MustVariant(tc.value)}, time.Now(), lim)
			switch {
			case tc.want == "" && (r.Quality != reading.Good || r.Value == nil):
				t.Errorf("reading = %+v, want good", r)
			case tc.want != "" && (r.Quality != reading.Bad || r.Value != nil || !strings.Contains(r.Error, tc.want)):
				t.Errorf("reading = %+v, want bad with %q", r, tc.want)
			}
		})
	}
}

// TestPasswordInClear: the password is readable on the wire when neither
// its token policy nor the channel encrypts it.
func TestPasswordInClear(t *testing.T) {
	none, b256 := ua.SecurityPolicyURINone, ua.SecurityPolicyURIPrefix+PolicyBasic256Sha256
	user := func(policy string) *ua.UserTokenPolicy {
		return &ua.UserTokenPolicy{PolicyID: "u-" + policy, TokenType: ua.UserTokenTypeUserName, SecurityPolicyURI: policy}
	}
	tests := []struct {
		name    string
		ep      *ua.EndpointDescription
		inClear bool
		chosen  string // PolicyID of the token policy used
	}{
		{"None channel, token policy None", &ua.EndpointDescription{SecurityPolicyURI: none, SecurityMode: ua.MessageSecurityModeNone,
			UserIdentityTokens: []*ua.UserTokenPolicy{user(none)}}, true, "u-" + none},
		{"None channel, token policy empty", &ua.EndpointDescription{SecurityPolicyURI: none, SecurityMode: ua.MessageSecurityModeNone,
			UserIdentityTokens: []*ua.UserTokenPolicy{user("")}}, true, "u-"},
		{"None channel, encrypted token preferred", &ua.EndpointDescription{SecurityPolicyURI: none, SecurityMode: ua.MessageSecurityModeNone,
			UserIdentityTokens: []*ua.UserTokenPolicy{user(none), user(b256)}}, false, "u-" + b256},
		{"Sign channel, token policy None", &ua.EndpointDescription{SecurityPolicyURI: b256, SecurityMode: ua.MessageSecurityModeSign,
			UserIdentityTokens: []*ua.UserTokenPolicy{user(none)}}, true, "u-" + none},
		{"Sign channel, token policy empty: encrypted with the channel's", &ua.EndpointDescription{SecurityPolicyURI: b256, SecurityMode: ua.MessageSecurityModeSign,
			UserIdentityTokens: []*ua.UserTokenPolicy{user("")}}, false, "u-"},
		{"SignAndEncrypt channel, token policy None", &ua.EndpointDescription{SecurityPolicyURI: b256, SecurityMode: ua.MessageSecurityModeSignAndEncrypt,
			UserIdentityTokens: []*ua.UserTokenPolicy{user(none)}}, false, "u-" + none},
	}
	for _, tc := range tests {
		tok := userTokenPolicy(tc.ep)
		if tok == nil || tok.PolicyID != tc.chosen {
			t.Errorf("%s: token policy %+v, want %s", tc.name, tok, tc.chosen)
			continue
		}
		if got := passwordInClear(tc.ep, tok); got != tc.inClear {
			t.Errorf("%s: passwordInClear = %v, want %v", tc.name, got, tc.inClear)
		}
	}
}
