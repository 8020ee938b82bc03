package sim

import (
	"flag"
	"time"
)

// FaultFlags registers the fault injection flags on fs, with def as
// defaults (a zero LateBy defaults to 1s), and returns the Faults they
// fill in.
func FaultFlags(fs *flag.FlagSet, def Faults) *Faults {
	if def.LateBy == 0 {
		def.LateBy = time.Second
	}
	f := &Faults{}
	fs.Float64Var(&f.Drop, "drop", def.Drop, "share of answers to drop (0..1)")
	fs.Float64Var(&f.Corrupt, "corrupt", def.Corrupt, "share of answers sent with a bit flipped after the unit id (0..1)")
	fs.BoolVar(&f.CRCOnly, "crc-only", def.CRCOnly, "-corrupt flips a bit of the CRC only (the frame whole, its check wrong)")
	fs.Float64Var(&f.Late, "late", def.Late, "share of answers sent late (0..1)")
	fs.DurationVar(&f.LateBy, "late-by", def.LateBy, "how late a late answer is")
	fs.Float64Var(&f.Noise, "noise", def.Noise, "share of answers preceded by random bytes (0..1)")
	fs.BoolVar(&f.Echo, "echo", def.Echo, "echo each request back, as some RS-485 adapters do")
	fs.DurationVar(&f.Slow, "slow", def.Slow, "pause before every answer")
	fs.Uint64Var(&f.Seed, "seed", def.Seed, "random seed for repeatable faults (0: random)")
	return f
}
