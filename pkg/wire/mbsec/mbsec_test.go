package mbsec

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
)

func utf8String(s string) []byte {
	b, _ := asn1.MarshalWithParams(s, "utf8")
	return b
}

func TestParseRole(t *testing.T) {
	octet, _ := asn1.Marshal([]byte("operator"))
	printable, _ := asn1.MarshalWithParams("operator", "printable")
	tests := []struct {
		name string
		der  []byte
		role string
		err  string
	}{
		{"UTF8String", utf8String("operator"), "operator", ""},
		{"non-ASCII", utf8String("opérateur"), "opérateur", ""},
		{"OCTET STRING", octet, "", "OCTET STRING, want a UTF8String"},
		{"PrintableString", printable, "", "PrintableString"},
		{"trailing bytes", append(utf8String("a"), 0), "", "bytes after"},
		{"truncated", utf8String("operator")[:4], "", "not DER"},
		{"empty", utf8String(""), "", "empty role"},
		{"bad UTF-8", []byte{0x0C, 2, 0xC3, 0x28}, "", "not valid UTF-8"},
		{"nothing", nil, "", "not DER"},
	}
	for _, tt := range tests {
		role, err := ParseRole(tt.der)
		if role != tt.role || (tt.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: %q, %v; want %q, %q", tt.name, role, err, tt.role, tt.err)
		}
	}
}

func TestRole(t *testing.T) {
	ext := func(der []byte) pkix.Extension { return pkix.Extension{Id: RoleOID, Value: der} }
	other := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Value: []byte{0x30, 0}}
	for _, tt := range []struct {
		name string
		exts []pkix.Extension
		role string
		bad  bool
	}{
		{"none", []pkix.Extension{other}, "", false},
		{"one", []pkix.Extension{other, ext(utf8String("engineer"))}, "engineer", false},
		{"two", []pkix.Extension{ext(utf8String("a")), ext(utf8String("b"))}, "", true},
		{"not a UTF8String", []pkix.Extension{ext([]byte{0x04, 1, 'a'})}, "", true},
	} {
		role, err := Role(&x509.Certificate{Extensions: tt.exts})
		if role != tt.role || (err != nil) != tt.bad {
			t.Errorf("%s: %q, %v", tt.name, role, err)
		}
	}
}

// FuzzParseRole: any bytes give a role or an error, never a panic, and a
// role is what a UTF8String of it encodes to.
func FuzzParseRole(f *testing.F) {
	f.Add(utf8String("operator"))
	f.Add([]byte{0x04, 1, 'a'})
	f.Add([]byte{0x0C, 0x81, 0x01, 'x'})
	f.Fuzz(func(t *testing.T, der []byte) {
		role, err := ParseRole(der)
		if err != nil {
			return
		}
		if role == "" || string(utf8String(role)) != string(der) {
			t.Fatalf("% X parsed as %q", der, role)
		}
	})
}
