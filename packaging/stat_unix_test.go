//go:build linux

package packaging

import "syscall"

func statUID(st any) any {
	if s, ok := st.(*syscall.Stat_t); ok {
		return s.Uid
	}
	return "?"
}
