package config

import (
	"strings"
	"testing"
)

func TestMLLPSource(t *testing.T) {
	head := "agent: {id: a1, data_dir: /tmp/x}\nupload: {endpoint: \"https://i.example.org/files/\"}\n"
	c, err := Parse("ok.yaml", []byte(head+`sources:
  - name: lab-feed
    kind: mllp
    listen: 0.0.0.0:2575
    allowed_peers: [10.1.0.0/16, 192.168.1.7]
    priority: high
`))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sources[0]
	if s.MaxMessage != 16*MiB || s.HL7 != "auto" || s.Listen != "0.0.0.0:2575" || len(s.AllowedPeers) != 2 {
		t.Errorf("defaults: %+v", s)
	}
	for _, tc := range []struct{ yaml, want string }{
		{`{name: m, kind: mllp}`, `sources[0].listen: must be set for kind mllp`},
		{`{name: m, kind: mllp, listen: "2575"}`, `sources[0].listen: must be HOST:PORT`},
		{`{name: m, kind: mllp, listen: ":99999"}`, `sources[0].listen: port must be 1-65535`},
		{`{name: m, kind: mllp, listen: ":2575", allowed_peers: [10.0.0.0/33]}`, `sources[0].allowed_peers[0]: must be a CIDR`},
		{`{name: m, kind: mllp, listen: ":2575", max_message: -1}`, `sources[0].max_message: must be > 0`},
		{`{name: m, kind: mllp, listen: ":2575", tls: {cert_file: /etc/hostname}}`, `sources[0].tls: cert_file and key_file must be set together`},
		{`{name: m, kind: mllp, listen: ":2575", tls: {client_ca: /etc/hostname}}`, `sources[0].tls.client_ca: needs cert_file and key_file`},
		{`{name: m, kind: mllp, listen: ":2575", tls: {cert_file: /nonexistent/c, key_file: /nonexistent/k}}`, `sources[0].tls.cert_file: cannot read`},
		{`{name: m, kind: mllp, listen: ":2575", tls: {certfile: x}}`, `sources[0].tls.certfile: unknown key`},
	} {
		_, err := Parse("bad.yaml", []byte(head+"sources: ["+tc.yaml+"]\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
