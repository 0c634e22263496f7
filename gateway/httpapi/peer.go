package httpapi

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// procNetTCP are the kernel's tables of this network namespace's TCP
// sockets, with the uid owning each.
var procNetTCP = []string{"/proc/net/tcp", "/proc/net/tcp6"}

// maxProcNetBytes bounds what peerUID reads of each table.
const maxProcNetBytes = 16 << 20

// peerUID returns the uid owning the client end of a loopback TCP
// connection from remote to local, from the kernel's socket tables: both
// ends are sockets of this host, so the client socket is listed with the
// uid of whoever opened it. A connection from another host, or one not
// found, yields ok false.
//
// This lets root on the gateway use `fieldgate stop|start` without the token
// file, while a collector that is not privileged — its own uid, on the host
// network — cannot. (A privileged collector runs as root and is root on the
// gateway anyway; see the README's security model.)
func peerUID(remote, local netip.AddrPort) (uid uint32, ok bool) {
	if !remote.Addr().Unmap().IsLoopback() {
		return 0, false
	}
	want := map[string]bool{}
	for _, f := range procAddrForms(remote) {
		for _, g := range procAddrForms(local) {
			if len(f) == len(g) {
				want[f+" "+g] = true
			}
		}
	}
	for _, table := range procNetTCP {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		uid, ok = findSocketUID(io.LimitReader(f, maxProcNetBytes), want)
		f.Close()
		if ok {
			return uid, true
		}
	}
	return 0, false
}

// findSocketUID scans one /proc/net/tcp{,6} table for a socket whose
// "local remote" address pair is in want and returns its uid.
func findSocketUID(r io.Reader, want map[string]bool) (uint32, bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), 4096)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid …
		f := strings.Fields(sc.Text())
		if len(f) < 8 || !want[f[1]+" "+f[2]] {
			continue
		}
		uid, err := strconv.ParseUint(f[7], 10, 32)
		if err != nil {
			return 0, false
		}
		return uint32(uid), true
	}
	return 0, false
}

// procAddrForms are the ways the kernel prints ap in its socket tables: an
// IPv4 address as one host-order (little-endian) word, IPv6 as four, and an
// IPv4 address of a dual-stack socket as its IPv4-mapped IPv6 form.
func procAddrForms(ap netip.AddrPort) []string {
	port := fmt.Sprintf(":%04X", ap.Port())
	a := ap.Addr()
	var out []string
	if v4 := a.Unmap(); v4.Is4() {
		b := v4.As4()
		out = append(out, fmt.Sprintf("%08X", binary.LittleEndian.Uint32(b[:]))+port)
		a = netip.AddrFrom16(v4.As16())
	}
	b := a.As16()
	var s strings.Builder
	for i := 0; i < 16; i += 4 {
		fmt.Fprintf(&s, "%08X", binary.LittleEndian.Uint32(b[i:i+4]))
	}
	return append(out, s.String()+port)
}
