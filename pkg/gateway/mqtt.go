package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/mcpgw/mcpgw/pkg/config"
	"github.com/mcpgw/mcpgw/pkg/north/sparkplug"
	"github.com/mcpgw/mcpgw/pkg/tag"
)

// sparkplugConfig translates [mqtt] and the lines' polls with values
// into the edge node's session and blocks.
func sparkplugConfig(m config.MQTT, lines []config.Bus) (sparkplug.Config, []sparkplug.Block, error) {
	tlsCfg, err := mqttTLS(m)
	if err != nil {
		return sparkplug.Config{}, nil, err
	}
	cfg := sparkplug.Config{Broker: m.Broker, TLS: tlsCfg, ClientID: m.ClientID, Group: m.Group, Node: m.Node,
		Username: m.Username, Password: m.Password, Buffer: m.Buffer}
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
// one. nil for tcp://.
func mqttTLS(m config.MQTT) (*tls.Config, error) {
	if !strings.HasPrefix(m.Broker, "ssl://") {
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
