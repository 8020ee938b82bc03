package sparkplug

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/mcpgw/mcpgw/pkg/north/sparkplug/sproto"
)

// Queue keeps the messages waiting to go out, in order, each with an id
// one more than the one before. spool.Log keeps them on disk; without
// it they wait in memory (NewMemQueue).
type Queue interface {
	Append(rec []byte) error
	// Peek returns the oldest message not yet acknowledged.
	Peek() (id uint64, rec []byte, ok bool, err error)
	// Ack drops the message Peek returned as id (ignored if it went meanwhile).
	Ack(id uint64) error
	// Next is the id the next Append gets.
	Next() uint64
	// Dropped counts the messages dropped unsent, the queue full.
	Dropped() uint64
	// Each calls fn with every message not yet acknowledged, oldest
	// first, until fn returns false.
	Each(fn func(id uint64, rec []byte) bool) error
	Close() error
}

// memQueue is a Queue in memory, of at most max messages, the oldest
// dropped first.
type memQueue struct {
	recs    [][]byte
	first   uint64 // id of recs[0]
	max     int
	dropped uint64
}

// NewMemQueue returns a Queue in memory that keeps at most max messages.
func NewMemQueue(max int) Queue { return &memQueue{max: max} }

func (q *memQueue) Append(rec []byte) error {
	if len(q.recs) >= q.max {
		q.recs[0] = nil
		q.recs = q.recs[1:]
		q.first++
		q.dropped++
	}
	q.recs = append(q.recs, rec)
	return nil
}

func (q *memQueue) Peek() (uint64, []byte, bool, error) {
	if len(q.recs) == 0 {
		return 0, nil, false, nil
	}
	return q.first, q.recs[0], true, nil
}

func (q *memQueue) Ack(id uint64) error {
	if len(q.recs) > 0 && id == q.first {
		q.recs[0] = nil
		q.recs = q.recs[1:]
		q.first++
	}
	return nil
}

func (q *memQueue) Each(fn func(id uint64, rec []byte) bool) error {
	for i, rec := range q.recs {
		if !fn(q.first+uint64(i), rec) {
			break
		}
	}
	return nil
}

func (q *memQueue) Next() uint64    { return q.first + uint64(len(q.recs)) }
func (q *memQueue) Dropped() uint64 { return q.dropped }
func (q *memQueue) Close() error    { return nil }

// A queued message is encoded as
//
//	[kind][length of the device id, 2 bytes][device id][a Sparkplug payload's metrics]
//
// with the metrics by name (not alias), so that a message kept on disk
// across a restart finds its metric though the configuration changed.
func encode(e event) []byte {
	b, err := proto.Marshal(&sproto.Payload{Metrics: e.metrics})
	if err != nil {
		panic(fmt.Sprintf("sparkplug: marshal: %v", err)) // metrics of our own making
	}
	rec := make([]byte, 0, 3+len(e.dev)+len(b))
	rec = append(rec, byte(e.kind), byte(len(e.dev)>>8), byte(len(e.dev)))
	rec = append(rec, e.dev...)
	return append(rec, b...)
}

var errRecord = errors.New("not a queued Sparkplug message")

func decode(rec []byte) (event, error) {
	if len(rec) < 3 || kind(rec[0]) > ddeath {
		return event{}, errRecord
	}
	end := 3 + (int(rec[1])<<8 | int(rec[2]))
	if len(rec) < end {
		return event{}, errRecord
	}
	e := event{kind: kind(rec[0]), dev: string(rec[3:end])}
	var p sproto.Payload
	if err := proto.Unmarshal(rec[end:], &p); err != nil {
		return event{}, fmt.Errorf("%w: %w", errRecord, err)
	}
	e.metrics = p.Metrics
	return e, nil
}
