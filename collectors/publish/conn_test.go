package publish

import (
	"bytes"
	"io"
	"net"
	"net/url"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestBufferedConnReadsPubacksAtOnce: paho's one-byte reads of a packet
// header are served from one read of the connection.
func TestBufferedConnReadsPubacksAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pubacks := bytes.Repeat([]byte{0x40, 0x02, 0x00, 0x01}, 50)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(pubacks)
		io.Copy(io.Discard, c)
	}()
	opts := mqtt.NewClientOptions()
	conn, err := openBuffered(&url.URL{Scheme: "tcp", Host: ln.Addr().String()}, *opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	counting := &countingReader{r: conn.(*bufferedConn).Conn}
	conn.(*bufferedConn).r.Reset(counting)
	got := make([]byte, 0, len(pubacks))
	one := make([]byte, 1)
	for len(got) < len(pubacks) {
		if _, err := io.ReadFull(conn, one); err != nil {
			t.Fatal(err)
		}
		got = append(got, one[0])
	}
	if !bytes.Equal(got, pubacks) {
		t.Fatal("bytes differ")
	}
	if counting.reads > 5 {
		t.Errorf("%d reads of the connection for 50 PUBACKs read a byte at a time", counting.reads)
	}
}

type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

func TestBufferReadsOnlyPlainTCP(t *testing.T) {
	for broker, want := range map[string]bool{"tcp://h:1883": true, "mqtt://h:1883": true, "ssl://h:8883": false, "ws://h:80": false} {
		opts := mqtt.NewClientOptions()
		bufferReads(opts, broker)
		if got := opts.CustomOpenConnectionFn != nil; got != want {
			t.Errorf("%s: buffered %v, want %v", broker, got, want)
		}
	}
}
