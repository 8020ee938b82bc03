// Package trace numbers transactions for the logs: each gets a short id
// at the TCP connection, and every log line about it, from the
// transaction line to the serial line's discarded bytes and the offline
// rule, carries it, so one grep follows a request to the wire and back.
package trace

import (
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"
)

// ID is a transaction's id. The zero ID is no transaction.
type ID uint64

// String is the id as the logs write it: base 36, a few characters.
func (id ID) String() string {
	if id == 0 {
		return ""
	}
	return strconv.FormatUint(uint64(id), 36)
}

// LogValue makes slog write the id, not the number.
func (id ID) LogValue() slog.Value { return slog.StringValue(id.String()) }

// next counts up from a start that differs between runs, so that ids in
// one day's logs rarely repeat across restarts.
var next atomic.Uint64

func init() { next.Store(uint64(time.Now().UnixNano()) % (36 * 36 * 36 * 36 * 36)) }

// Next returns a new id, unique within the process.
func Next() ID { return ID(next.Add(1)) }
