package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// formatVersion is the on-disk format this package writes (see the package
// comment). Format 1 was github.com/tidwall/wal, read once and migrated.
const formatVersion = 2

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Segment header: magic | version u16 | flags u16 | number u64 | base seq u64 | crc32c u32.
const (
	headerSize    = 32
	headerMagic   = "FGQUEUE\x00"
	flagMigrated  = 1 << 0 // the segment holds records migrated from format 1
	maxFrameBody  = 1 << 30
	frameHeadSize = 12
	bodyHeadSize  = 19
	kindData      = 1
)

// frameMagic starts every frame; bytes chosen to be rare in JSON and
// protobuf payloads, so a scan for the next frame after damage seldom stops
// on a false start (and the CRC rejects those that it does).
var frameMagic = [4]byte{0xF9, 0x51, 0x9A, 0xC3}

type segHeader struct {
	version uint16
	flags   uint16
	number  uint64
	base    uint64 // the first seq that may be in this segment
}

func appendHeader(b []byte, h segHeader) []byte {
	start := len(b)
	b = append(b, headerMagic...)
	b = binary.BigEndian.AppendUint16(b, h.version)
	b = binary.BigEndian.AppendUint16(b, h.flags)
	b = binary.BigEndian.AppendUint64(b, h.number)
	b = binary.BigEndian.AppendUint64(b, h.base)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

func parseHeader(b []byte) (segHeader, error) {
	if len(b) < headerSize {
		return segHeader{}, fmt.Errorf("segment header of %d bytes is too short", len(b))
	}
	if string(b[:8]) != headerMagic {
		return segHeader{}, errors.New("segment header magic mismatch")
	}
	if crc32.Checksum(b[:28], castagnoli) != binary.BigEndian.Uint32(b[28:]) {
		return segHeader{}, errors.New("segment header checksum mismatch")
	}
	return segHeader{
		version: binary.BigEndian.Uint16(b[8:]),
		flags:   binary.BigEndian.Uint16(b[10:]),
		number:  binary.BigEndian.Uint64(b[12:]),
		base:    binary.BigEndian.Uint64(b[20:]),
	}, nil
}

// appendFrame encodes r as a data frame at the end of b.
func appendFrame(b []byte, r Record) []byte {
	start := len(b)
	body := bodyHeadSize + len(r.Topic) + len(r.Payload)
	b = append(b, frameMagic[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(body))
	b = append(b, 0, 0, 0, 0) // crc, below
	b = append(b, kindData)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(r.TS.UnixMilli()))
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Topic)))
	b = append(b, r.Topic...)
	b = append(b, r.Payload...)
	crc := crc32.Update(crc32.Checksum(b[start+4:start+8], castagnoli), castagnoli, b[start+frameHeadSize:])
	binary.BigEndian.PutUint32(b[start+8:], crc)
	return b
}

// frameSize is the encoded size of r.
func frameSize(r Record) int {
	return frameHeadSize + bodyHeadSize + len(r.Topic) + len(r.Payload)
}

// frame is one checked frame; body aliases the input.
type frame struct {
	kind byte
	seq  uint64
	ts   int64 // unix ms
	body []byte
	size int // bytes the frame takes
}

// record decodes a data frame; the payload aliases the frame's input.
func (f frame) record() Record {
	tl := int(binary.BigEndian.Uint16(f.body[17:]))
	return Record{
		Seq:     f.seq,
		TS:      time.UnixMilli(f.ts),
		Topic:   string(f.body[bodyHeadSize : bodyHeadSize+tl]),
		Payload: f.body[bodyHeadSize+tl:],
	}
}

var (
	errShort    = errors.New("frame truncated")
	errMagic    = errors.New("frame magic mismatch")
	errLength   = errors.New("frame length out of range")
	errChecksum = errors.New("frame checksum mismatch")
	errBody     = errors.New("frame body malformed")
)

// parseFrame decodes the frame at the start of b. It never reads past b and
// never trusts a length it has not checked against len(b).
func parseFrame(b []byte) (frame, error) {
	if len(b) < frameHeadSize {
		return frame{}, errShort
	}
	if !bytes.Equal(b[:4], frameMagic[:]) {
		return frame{}, errMagic
	}
	n := binary.BigEndian.Uint32(b[4:])
	if n < 1 || n > maxFrameBody {
		return frame{}, errLength
	}
	if uint64(len(b)-frameHeadSize) < uint64(n) {
		return frame{}, errShort
	}
	body := b[frameHeadSize : frameHeadSize+int(n)]
	crc := crc32.Update(crc32.Checksum(b[4:8], castagnoli), castagnoli, body)
	if crc != binary.BigEndian.Uint32(b[8:]) {
		return frame{}, errChecksum
	}
	f := frame{kind: body[0], body: body, size: frameHeadSize + int(n)}
	if f.kind != kindData {
		return f, nil // a kind from a newer writer: skipped by the caller
	}
	if len(body) < bodyHeadSize || bodyHeadSize+int(binary.BigEndian.Uint16(body[17:])) > len(body) {
		return frame{}, errBody
	}
	f.seq = binary.BigEndian.Uint64(body[1:])
	f.ts = int64(binary.BigEndian.Uint64(body[9:]))
	return f, nil
}

// nextFrame returns the offset of the first valid frame in b at or after
// from, or -1: how a scan resynchronises after a damaged frame.
func nextFrame(b []byte, from int) int {
	for from < len(b) {
		i := bytes.Index(b[from:], frameMagic[:])
		if i < 0 {
			return -1
		}
		if _, err := parseFrame(b[from+i:]); err == nil {
			return from + i
		}
		from += i + 1
	}
	return -1
}

// scanned is a data record found by scan, and where it is.
type scanned struct {
	seq  uint64
	ts   int64 // unix ms
	off  int64
	size int32
}

// scanResult is what scan found in one segment's bytes.
type scanResult struct {
	records []scanned
	// corrupt counts damaged regions followed by a valid frame (each lost
	// at least one record); tail is the offset where trailing damage (a
	// torn or zero-filled tail) starts, or -1.
	corrupt int
	tail    int64
	// stale counts valid frames out of seq order (left over from an older
	// life of the bytes), unknown frames of a kind this version does not know.
	stale, unknown int
}

// scan reads the frames of a segment body starting at off. Records must
// have seqs above after (and increasing); others are stale and skipped.
func scan(b []byte, off int, after uint64) scanResult {
	res := scanResult{tail: -1}
	last := after
	for off < len(b) {
		f, err := parseFrame(b[off:])
		if err != nil {
			next := nextFrame(b, off+1)
			if next < 0 {
				res.tail = int64(off)
				break
			}
			res.corrupt++
			off = next
			continue
		}
		switch {
		case f.kind != kindData:
			res.unknown++
		case f.seq <= last:
			res.stale++
		default:
			res.records = append(res.records, scanned{seq: f.seq, ts: f.ts, off: int64(off), size: int32(f.size)})
			last = f.seq
		}
		off += f.size
	}
	return res
}
