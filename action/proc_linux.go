//go:build linux

package action

import (
	"bytes"
	"os"
	"strconv"
)

// procStat is what lastmile reads of a process in /proc/PID/stat.
type procStat struct {
	pid, ppid, pgid int
	start           uint64 // clock ticks after boot
	zombie          bool
}

// readStat reads /proc/PID/stat: "pid (comm) state ppid pgrp … starttime
// …", comm being anything up to the last ')'.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := bytes.Fields(b[i+1:]) // state is f[0]; ppid f[1]; pgrp f[2]; starttime f[19]
	if len(f) < 20 {
		return procStat{}, false
	}
	s := procStat{pid: pid, zombie: string(f[0]) == "Z" || string(f[0]) == "X"}
	var e1, e2, e3 error
	s.ppid, e1 = strconv.Atoi(string(f[1]))
	s.pgid, e2 = strconv.Atoi(string(f[2]))
	s.start, e3 = strconv.ParseUint(string(f[19]), 10, 64)
	return s, e1 == nil && e2 == nil && e3 == nil
}

// processStart returns the start time of a live process (not a zombie).
func processStart(pid int) (uint64, bool) {
	s, ok := readStat(pid)
	return s.start, ok && !s.zombie
}

// descendantsOutside returns the live descendants of roots whose process
// group is not pgid, with their start times. roots maps a pid to its start
// time: a root whose process has another start time now (its pid reused)
// is left out, as is one gone; 0 takes the pid as it is.
func descendantsOutside(roots map[int]uint64, pgid int) map[int]uint64 {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]procStat{}
	var queue []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, ok := readStat(pid)
		if !ok {
			continue
		}
		children[s.ppid] = append(children[s.ppid], s)
		if start, root := roots[pid]; root && (start == 0 || start == s.start && !s.zombie) {
			queue = append(queue, pid)
		}
	}
	out := map[int]uint64{}
	seen := map[int]bool{}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		for _, c := range children[pid] {
			if c.pgid != pgid && !c.zombie {
				out[c.pid] = c.start
			}
			queue = append(queue, c.pid)
		}
	}
	return out
}
