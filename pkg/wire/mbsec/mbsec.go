// Package mbsec is what mcpgw takes from the Modbus/TCP Security
// specification: the client's role, carried in its X.509 certificate, and
// the TLS settings of a listener that requires one.
package mbsec

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"unicode/utf8"
)

// RoleOID is the certificate extension that carries the client's role.
var RoleOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 50316, 802, 1}

// ParseRole decodes a role extension's value: a DER UTF8String, nothing
// after it. It is a pure function of the bytes.
func ParseRole(der []byte) (string, error) {
	var v asn1.RawValue
	rest, err := asn1.Unmarshal(der, &v)
	switch {
	case err != nil:
		return "", fmt.Errorf("role extension: not DER: %w", err)
	case len(rest) > 0:
		return "", errors.New("role extension: bytes after the UTF8String")
	case v.Class != asn1.ClassUniversal || v.Tag != asn1.TagUTF8String || v.IsCompound:
		return "", fmt.Errorf("role extension: an ASN.1 %s, want a UTF8String (some tools write an OCTET STRING: make the certificate with ASN1:UTF8String:ROLE)", tagName(v))
	case !utf8.Valid(v.Bytes):
		return "", errors.New("role extension: the UTF8String is not valid UTF-8")
	case len(v.Bytes) == 0:
		return "", errors.New("role extension: an empty role")
	}
	return string(v.Bytes), nil
}

func tagName(v asn1.RawValue) string {
	if v.Class != asn1.ClassUniversal {
		return fmt.Sprintf("class %d tag %d", v.Class, v.Tag)
	}
	switch v.Tag {
	case asn1.TagOctetString:
		return "OCTET STRING"
	case asn1.TagPrintableString:
		return "PrintableString"
	case asn1.TagIA5String:
		return "IA5String"
	case asn1.TagSequence:
		return "SEQUENCE"
	}
	return fmt.Sprintf("tag %d", v.Tag)
}

// Role returns the role in cert: "" if it has no role extension, an error
// if it has more than one or one that is not a UTF8String.
func Role(cert *x509.Certificate) (string, error) {
	role, found := "", false
	for _, e := range cert.Extensions {
		if !e.Id.Equal(RoleOID) {
			continue
		}
		if found {
			return "", errors.New("more than one role extension")
		}
		found = true
		var err error
		if role, err = ParseRole(e.Value); err != nil {
			return "", err
		}
	}
	return role, nil
}

// Identity is who is at the other end of a TLS connection.
type Identity struct {
	Role string // "" : none
	Peer string // the certificate's subject
}

// Identify returns the identity of a connection whose handshake is done
// and whose client presented a certificate the server verified.
func Identify(cs tls.ConnectionState) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, errors.New("no client certificate")
	}
	leaf := cs.PeerCertificates[0]
	role, err := Role(leaf)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Role: role, Peer: leaf.Subject.String()}, nil
}
