package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// LinkTypeRTACSerial is LINKTYPE_RTAC_SERIAL: each packet starts with a
// 12-byte header: seconds and microseconds (big-endian, 4 bytes each), an
// event type, a control-line byte and a 2-byte footer.
const LinkTypeRTACSerial = layers.LinkType(250)

const rtacHeaderLen = 12

// RTAC serial event types.
const (
	rtacTXStart = 0x01
	rtacRXStart = 0x02
)

type pcapWriter struct{ w *pcapgo.Writer }

func newPcapWriter(w io.Writer) (Writer, error) {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(65536, LinkTypeRTACSerial); err != nil {
		return nil, fmt.Errorf("capture: pcap header: %w", err)
	}
	return &pcapWriter{pw}, nil
}

func (p *pcapWriter) Write(r *Record) error {
	buf := make([]byte, rtacHeaderLen, rtacHeaderLen+len(r.Data))
	binary.BigEndian.PutUint32(buf[0:], uint32(r.Time.Unix()))
	binary.BigEndian.PutUint32(buf[4:], uint32(r.Time.Nanosecond()/1000))
	buf[8] = rtacRXStart
	if r.Dir == TX {
		buf[8] = rtacTXStart
	}
	buf = append(buf, r.Data...)
	return p.w.WritePacket(gopacket.CaptureInfo{Timestamp: r.Time, CaptureLength: len(buf), Length: len(buf)}, buf)
}

func (p *pcapWriter) Close() error { return nil }

type packetReader interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	LinkType() layers.LinkType
}

// readPcap reads pcap or pcapng with link type 250.
func readPcap(r io.ReadSeeker) ([]Record, error) {
	var pr packetReader
	if ng, err := pcapgo.NewNgReader(r, pcapgo.DefaultNgReaderOptions); err == nil {
		pr = ng
	} else {
		r.Seek(0, io.SeekStart)
		p, err := pcapgo.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("capture: %w", err)
		}
		pr = p
	}
	if pr.LinkType() != LinkTypeRTACSerial {
		return nil, fmt.Errorf("capture: link type %d, want %d (RTAC serial)", pr.LinkType(), LinkTypeRTACSerial)
	}
	var recs []Record
	for {
		data, ci, err := pr.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return recs, nil
		}
		if err != nil {
			return recs, fmt.Errorf("capture: packet %d: %w", len(recs)+1, err)
		}
		if len(data) < rtacHeaderLen {
			return recs, fmt.Errorf("capture: packet %d: %d bytes, shorter than the RTAC header", len(recs)+1, len(data))
		}
		rec := Record{Time: ci.Timestamp.UTC(), Data: append([]byte(nil), data[rtacHeaderLen:]...)}
		sec, usec := binary.BigEndian.Uint32(data[0:]), binary.BigEndian.Uint32(data[4:])
		if sec != 0 {
			rec.Time = time.Unix(int64(sec), int64(usec)*1000).UTC()
		}
		switch data[8] {
		case rtacTXStart, 0x03:
			rec.Dir = TX
		case rtacRXStart, 0x04:
			rec.Dir = RX
		default:
			continue // status changes and the like carry no line data
		}
		recs = append(recs, rec)
	}
}
