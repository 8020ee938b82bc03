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
	return ClientTLS(m.CA, m.Cert, m.Key, "mqtt.ca", "mqtt.cert, mqtt.key")
}

// ClientTLS is the TLS of a client of ours: TLS 1.2 or later, the
// server's certificate checked against the CA in caFile (PEM; empty: the
// system's), and a client certificate from certFile and keyFile if
// given. caName and certName name where the files were given, for the
// errors.
func ClientTLS(caFile, certFile, keyFile, caName, certName string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", caName, err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %s: no PEM certificate in it", caName, caFile)
		}
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", certName, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
