package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/north/sparkplug"
	"github.com/mcpgw/mcpgw/pkg/north/spool"
	"github.com/mcpgw/mcpgw/pkg/tag"
)

// sparkplugConfig translates [mqtt] and the lines' polls with values
// into the edge node's session and blocks, and opens its store if it
// has one.
func sparkplugConfig(m config.MQTT, lines []config.Bus, log *slog.Logger) (sparkplug.Config, []sparkplug.Block, error) {
	tlsCfg, err := mqttTLS(m)
	if err != nil {
		return sparkplug.Config{}, nil, err
	}
	cfg := sparkplug.Config{Brokers: m.Brokers, TLS: tlsCfg, ClientID: m.ClientID, Group: m.Group, Node: m.Node,
		Username: m.Username, Password: m.Password, Buffer: m.Buffer,
		PrimaryHost: m.PrimaryHost, LegacyState: m.LegacyState}
	if m.Store != "" {
		q, err := spool.Open(m.Store, int64(m.StoreMaxMB)<<20)
		if err != nil {
			return sparkplug.Config{}, nil, fmt.Errorf("mqtt.store: %w", err)
		}
		if err := q.Truncated(); err != nil {
			log.Warn("Sparkplug store: a torn tail was cut off (the gateway stopped mid-write, a power cut?)", "err", err)
		}
		log.Info("Sparkplug store opened", "dir", m.Store, "waiting", q.Len(), "bytes", q.Size(), "max_mb", m.StoreMaxMB)
		cfg.Queue = q
		cfg.BdSeqFile = filepath.Join(m.Store, "bdseq")
	}
	var blocks []sparkplug.Block
	for _, b := range lines {
		for _, p := range b.Poll {
			if len(p.Value) == 0 {
				continue
			}
			blk := sparkplug.Block{Device: p.Device, Unit: byte(p.Unit), Function: byte(p.Function),
				Address: uint16(p.Address), Count: uint16(p.Count)}
			for _, v := range p.Value {
				blk.Tags = append(blk.Tags, tag.Tag{Name: v.Name, Offset: v.Offset, Type: v.Type, Bit: v.Bit, Length: v.Length,
					Order: v.Order, Scale: *v.Scale, Add: v.OffsetValue, Writable: v.Writable, Deadband: v.Deadband})
			}
			blocks = append(blocks, blk)
		}
	}
	return cfg, blocks, nil
}

// mqttTLS is the TLS an ssl:// broker gets: its CA from mqtt.ca (else
// the system's), and a client certificate if mqtt.cert and mqtt.key name
// one. nil if every broker is tcp://.
func mqttTLS(m config.MQTT) (*tls.Config, error) {
	if !slices.ContainsFunc(m.Brokers, func(b string) bool { return strings.HasPrefix(b, "ssl://") }) {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if m.CA != "" {
		pem, err := os.ReadFile(m.CA)
		if err != nil {
			return nil, fmt.Errorf("mqtt.ca: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt.ca %s: no PEM certificate in it", m.CA)
		}
	}
	if m.Cert != "" {
		cert, err := tls.LoadX509KeyPair(m.Cert, m.Key)
		if err != nil {
			return nil, fmt.Errorf("mqtt.cert, mqtt.key: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
