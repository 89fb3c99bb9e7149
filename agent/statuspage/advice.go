package statuspage

import "strings"

// Advice says, for an error message, what a clinic admin can check. It matches on the
// agent's own wording; an unknown message gets no advice rather than a wrong one.
func Advice(msg string) string {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "tls:") || strings.Contains(m, "certificate"):
		return "The server's certificate is not trusted: check upload.tls.ca_file and the clock of this PC."
	case strings.Contains(m, "401") || strings.Contains(m, "403") || strings.Contains(m, "unauthorized") || strings.Contains(m, "forbidden"):
		return "The server refused this agent's credentials: check upload.bearer_token_file (or the client certificate) with central IT."
	case strings.Contains(m, "connection refused"):
		return "Nothing answers at the upload endpoint: is courier-ingest running, and is upload.endpoint right?"
	case strings.Contains(m, "no such host") || strings.Contains(m, "lookup"):
		return "The upload host name does not resolve: check DNS and upload.endpoint."
	case strings.Contains(m, "timeout") || strings.Contains(m, "deadline") || strings.Contains(m, "no route") || strings.Contains(m, "unreachable"):
		return "The network to the server is down or too slow: files wait in the spool and go when it is back."
	case strings.Contains(m, "413") || strings.Contains(m, "too large"):
		return "The server refuses files this large: raise its --max-size, then run the retry command below."
	case strings.Contains(m, "checksum") || strings.Contains(m, "460") || strings.Contains(m, "digest"):
		return "The bytes were damaged on the way more than once: check the network path (proxy, VPN), then retry."
	case strings.Contains(m, "spool is full") || strings.Contains(m, "no space") || strings.Contains(m, "disk is full"):
		return "The spool's disk or spool.max_bytes is full: intake waits until uploads free space; free disk space if uploads cannot run."
	case strings.Contains(m, "500") || strings.Contains(m, "502") || strings.Contains(m, "503") || strings.Contains(m, "504"):
		return "The server (or a proxy in front of it) is failing: central IT should look at courier-ingest's log."
	case strings.Contains(m, "missing") && strings.Contains(m, "content"):
		return "The spooled copy is gone: run `courier spool verify`; the source may still have the file."
	}
	return ""
}
