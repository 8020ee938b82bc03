package capture

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// The text format, one record a line:
//
//	# comments and blank lines are ignored
//	0.000000 tx 0 01 03 00 00 00 0a c5 cd
//	0.004711 rx 4711 01 03 14 ... # a comment
//
// the time since the first record in seconds, the direction, the silence
// before it in microseconds (since the previous record's last byte), the
// bytes in hex, and an optional comment.

type textWriter struct {
	w          io.Writer
	start, end time.Time
	buf        []byte
}

func newTextWriter(w io.Writer) (Writer, error) {
	_, err := io.WriteString(w, "# mcpgw serial capture: seconds since start, direction (tx: from the master), silence before it in µs, bytes in hex\n")
	return &textWriter{w: w}, err
}

func (t *textWriter) Write(r *Record) error {
	if t.start.IsZero() {
		t.start, t.end = r.Time, r.Time
	}
	gap := max(r.Time.Sub(t.end), 0)
	b := t.buf[:0]
	b = fmt.Appendf(b, "%.6f %s %d", r.Time.Sub(t.start).Seconds(), r.Dir, gap.Microseconds())
	for _, c := range r.Data {
		b = append(b, ' ')
		b = hex.AppendEncode(b, []byte{c})
	}
	if r.Comment != "" {
		b = append(b, " # "...)
		b = append(b, r.Comment...)
	}
	b = append(b, '\n')
	t.buf = b
	t.end = r.Time
	if !r.End.IsZero() {
		t.end = r.End
	}
	_, err := t.w.Write(b)
	return err
}

func (t *textWriter) Close() error { return nil }

// base is the time text captures count from when read back.
var base = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func readText(data []byte) ([]Record, error) {
	var recs []Record
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		var comment string
		if i := strings.Index(line, "#"); i >= 0 {
			line, comment = line[:i], strings.TrimSpace(line[i+1:])
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 {
			return nil, fmt.Errorf("line %d: want time, direction, gap and bytes", n)
		}
		secs, err := strconv.ParseFloat(f[0], 64)
		if err != nil || secs < 0 || secs > 1e9 {
			return nil, fmt.Errorf("line %d: time %q", n, f[0])
		}
		var dir Dir
		switch f[1] {
		case "tx":
			dir = TX
		case "rx":
			dir = RX
		default:
			return nil, fmt.Errorf("line %d: direction %q, want tx or rx", n, f[1])
		}
		if _, err := strconv.ParseUint(f[2], 10, 63); err != nil {
			return nil, fmt.Errorf("line %d: gap %q", n, f[2])
		}
		b, err := hex.DecodeString(strings.Join(f[3:], ""))
		if err != nil {
			return nil, fmt.Errorf("line %d: bytes: %v", n, err)
		}
		recs = append(recs, Record{Time: base.Add(time.Duration(secs * 1e9)), Dir: dir, Data: b, Comment: comment})
	}
	return recs, sc.Err()
}

// readSocat reads socat -x -v dumps: a header line per transfer,
//
//	> 2026/11/21 05:58:16.000893301  length=8 from=0 to=7
//	 01 03 00 00 00 03 05 cb                          ........
//	--
//
// '>' for data from socat's first address to its second, '<' the other
// way. The first address is taken as the master's side (TX); Replay can
// swap them when the traffic says otherwise.
func readSocat(data []byte) ([]Record, error) {
	var recs []Record
	var cur *Record
	want := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ">") || strings.HasPrefix(line, "<"):
			f := strings.Fields(line)
			if len(f) < 4 {
				return nil, fmt.Errorf("line %d: socat header %q", n, line)
			}
			t, err := socatTime(f[1], f[2])
			if err != nil {
				return nil, fmt.Errorf("line %d: socat time: %v", n, err)
			}
			l, ok := strings.CutPrefix(f[3], "length=")
			if !ok {
				return nil, fmt.Errorf("line %d: no length= in %q", n, line)
			}
			if want, err = strconv.Atoi(l); err != nil || want < 0 || want > 1<<20 {
				return nil, fmt.Errorf("line %d: length %q", n, l)
			}
			dir := TX
			if line[0] == '<' {
				dir = RX
			}
			recs = append(recs, Record{Time: t, Dir: dir})
			cur = &recs[len(recs)-1]
		case line == "--":
			if cur != nil && len(cur.Data) != want {
				return nil, fmt.Errorf("line %d: %d bytes in a transfer of length %d", n, len(cur.Data), want)
			}
			cur = nil
		case cur != nil:
			// The hex column is the first 49 characters; the rest is text.
			hexPart := line
			if len(hexPart) > 49 {
				hexPart = hexPart[:49]
			}
			for _, tok := range strings.Fields(hexPart) {
				if len(cur.Data) == want {
					break
				}
				b, err := hex.DecodeString(tok)
				if err != nil || len(b) != 1 {
					return nil, fmt.Errorf("line %d: hex %q", n, tok)
				}
				cur.Data = append(cur.Data, b[0])
			}
		}
	}
	return recs, sc.Err()
}

// socatTime parses socat's timestamp. socat 1.7.4 prints the microseconds
// in a nine-digit field ("06:00:42.000302711" is 0.302711 s into the
// second, as consecutive transfers show), so a nine-digit fraction with
// three leading zeros is read as microseconds.
func socatTime(date, clock string) (time.Time, error) {
	hms, frac, _ := strings.Cut(clock, ".")
	t, err := time.Parse("2006/01/02 15:04:05", date+" "+hms)
	if err != nil {
		return t, err
	}
	if frac == "" {
		return t, nil
	}
	v, err := strconv.ParseUint(frac, 10, 64)
	if err != nil {
		return t, fmt.Errorf("fraction %q", frac)
	}
	switch {
	case len(frac) == 9 && strings.HasPrefix(frac, "000"), len(frac) == 6:
		return t.Add(time.Duration(v) * time.Microsecond), nil
	case len(frac) == 9:
		return t.Add(time.Duration(v)), nil
	}
	return t, fmt.Errorf("fraction %q: want 6 or 9 digits", frac)
}
