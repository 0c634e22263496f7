package publish

import (
	"bufio"
	"net"
	"net/url"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// bufferedConn gives paho's packet reader a buffer. paho reads an MQTT fixed
// header a byte at a time, which on a bare TCP connection is one read(2)
// per byte: three system calls per PUBACK, for every batch published at
// QoS 1. Through the buffer, one read(2) takes every PUBACK that has
// arrived. TLS connections buffer their records already.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// openBuffered opens tcp:// and mqtt:// brokers as paho does (its dialer,
// and a proxy from ALL_PROXY if set) with a read buffer; paho's option
// CustomOpenConnectionFn.
func openBuffered(uri *url.URL, opts mqtt.ClientOptions) (net.Conn, error) {
	dialer := opts.Dialer
	if dialer == nil {
		dialer = &net.Dialer{Timeout: opts.ConnectTimeout}
	}
	conn, err := proxy.FromEnvironmentUsing(dialer).Dial("tcp", uri.Host)
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, 4096)}, nil
}

// bufferReads makes opts open plain-TCP brokers through openBuffered.
func bufferReads(opts *mqtt.ClientOptions, broker string) {
	if u, err := url.Parse(broker); err == nil && (u.Scheme == "tcp" || u.Scheme == "mqtt") {
		opts.SetCustomOpenConnectionFn(openBuffered)
	}
}
