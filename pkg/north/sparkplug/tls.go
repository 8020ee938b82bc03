package sparkplug

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/mcpgw/mcpgw/pkg/config"
)

// TLSConfig is the TLS an ssl:// broker gets: its CA from mqtt.ca (else
// the system's), and a client certificate if mqtt.cert and mqtt.key name
// one. nil for tcp://.
func TLSConfig(m config.MQTT) (*tls.Config, error) {
	if len(m.Broker) < 6 || m.Broker[:6] != "ssl://" {
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
