//go:build unix && !linux

package action

// Outside Linux there is no /proc to find the command's descendants in:
// the process group alone is signalled (action.yml refuses runners other
// than Linux; this keeps action.Run usable from Go code elsewhere).

func processStart(int) (uint64, bool) { return 0, false }

func descendantsOutside(map[int]uint64, int) map[int]uint64 { return nil }
