package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// exitLog listens to the kernel's taskstats exit notifications (netlink,
// TASKSTATS_CMD_ATTR_REGISTER_CPUMASK): one record per exiting thread of
// every process on the host, with its own user and system time, parent,
// thread group and program inode. It is how the compare mode charges CPU
// to a worker's processes but not to its steps' processes: a cgroup or
// RUSAGE_CHILDREN would sum both, and the processes are too short-lived to
// sample from /proc. Needs root (or CAP_NET_ADMIN).
type exitLog struct {
	fd     int
	family uint16
	stop   chan struct{}
	done   chan struct{}

	mu        sync.Mutex
	recording bool
	recs      []exitRec
	lost      int // ENOBUFS: the socket overflowed, records were dropped
}

// exitRec is one exited thread.
type exitRec struct {
	pid, tgid, ppid uint32
	comm            string
	exeIno          uint64
	cpu             time.Duration // user + system of this thread
	start, exit     time.Time     // exit is when the record was read
}

func openExitLog() (*exitLog, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
	if err != nil {
		return nil, fmt.Errorf("opening a generic netlink socket: %w", err)
	}
	l := &exitLog{fd: fd, stop: make(chan struct{}), done: make(chan struct{})}
	if err := l.setup(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	go l.read()
	return l, nil
}

func (l *exitLog) setup() error {
	if err := unix.Bind(l.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("binding the netlink socket: %w", err)
	}
	// Every thread exit on the host lands here while other agents build
	// and test: a large buffer keeps bursts from overflowing it.
	if err := unix.SetsockoptInt(l.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
		unix.SetsockoptInt(l.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 64<<20)
	}
	// The read loop wakes up this often to see whether it should stop.
	tv := unix.Timeval{Usec: 200_000}
	if err := unix.SetsockoptTimeval(l.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("setting the netlink read timeout: %w", err)
	}
	fam, err := l.familyID("TASKSTATS")
	if err != nil {
		return err
	}
	l.family = fam
	cpus, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return fmt.Errorf("reading the CPU list: %w", err)
	}
	mask := strings.TrimSpace(string(cpus))
	msg := genlMsg(l.family, unix.TASKSTATS_CMD_GET, nlAttr(unix.TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, append([]byte(mask), 0)))
	if err := unix.Sendto(l.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("registering for taskstats exit records: %w", err)
	}
	return nil
}

// familyID asks the generic netlink controller for a family's id.
func (l *exitLog) familyID(name string) (uint16, error) {
	msg := genlMsg(unix.GENL_ID_CTRL, unix.CTRL_CMD_GETFAMILY, nlAttr(unix.CTRL_ATTR_FAMILY_NAME, append([]byte(name), 0)))
	if err := unix.Sendto(l.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("asking for the %s netlink family: %w", name, err)
	}
	buf := make([]byte, 65536)
	for range 10 {
		n, _, err := unix.Recvfrom(l.fd, buf, 0)
		if err != nil {
			return 0, fmt.Errorf("reading the %s netlink family: %w", name, err)
		}
		for _, m := range splitNl(buf[:n]) {
			switch m.typ {
			case unix.NLMSG_ERROR:
				if len(m.data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.data)); e != 0 {
						return 0, fmt.Errorf("netlink family %s: %w (kernel without CONFIG_TASKSTATS?)", name, unix.Errno(-e))
					}
				}
			case unix.GENL_ID_CTRL:
				if len(m.data) < 4 {
					continue
				}
				for _, a := range splitAttrs(m.data[4:]) {
					if a.typ == unix.CTRL_ATTR_FAMILY_ID && len(a.data) >= 2 {
						return binary.NativeEndian.Uint16(a.data), nil
					}
				}
			}
		}
	}
	return 0, fmt.Errorf("no answer for the %s netlink family", name)
}

func (l *exitLog) read() {
	defer close(l.done)
	buf := make([]byte, 1<<20)
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(l.fd, buf, 0)
		now := time.Now()
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS):
			l.mu.Lock()
			if l.recording {
				l.lost++
			}
			l.mu.Unlock()
			continue
		case err != nil:
			fmt.Fprintln(os.Stderr, "bench: reading taskstats:", err)
			return
		}
		l.mu.Lock()
		if l.recording {
			for _, m := range splitNl(buf[:n]) {
				if m.typ == l.family && len(m.data) >= 4 {
					l.recs = append(l.recs, parseExit(m.data[4:], now)...)
				}
			}
		}
		l.mu.Unlock()
	}
}

// parseExit reads the TASKSTATS_TYPE_AGGR_PID records of one message; the
// TASKSTATS_TYPE_AGGR_TGID ones carry no CPU times and are skipped.
func parseExit(attrs []byte, now time.Time) []exitRec {
	var out []exitRec
	for _, a := range splitAttrs(attrs) {
		if a.typ != unix.TASKSTATS_TYPE_AGGR_PID {
			continue
		}
		for _, in := range splitAttrs(a.data) {
			if in.typ != unix.TASKSTATS_TYPE_STATS {
				continue
			}
			var ts unix.Taskstats
			// The kernel's struct may be longer or shorter than ours: its
			// fields only ever get appended.
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&ts)), unsafe.Sizeof(ts)), in.data)
			r := exitRec{
				pid:    ts.Ac_pid,
				tgid:   ts.Ac_tgid,
				ppid:   ts.Ac_ppid,
				comm:   cString(ts.Ac_comm[:]),
				exeIno: ts.Ac_exe_inode,
				cpu:    time.Duration(ts.Ac_utime+ts.Ac_stime) * time.Microsecond,
				exit:   now,
				start:  now.Add(-time.Duration(ts.Ac_etime) * time.Microsecond),
			}
			if r.tgid == 0 { // kernels before taskstats version 12
				r.tgid = r.pid
			}
			out = append(out, r)
		}
	}
	return out
}

// record starts keeping records (dropping those kept before).
func (l *exitLog) record() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recording, l.recs, l.lost = true, nil, 0
}

// take stops keeping records and returns them. The exit records of a
// process the caller has just waited for are already queued on the
// socket (the kernel sends them before it tells the parent), so a short
// pause lets the read loop catch up.
func (l *exitLog) take() ([]exitRec, int) {
	time.Sleep(500 * time.Millisecond)
	l.mu.Lock()
	defer l.mu.Unlock()
	recs, lost := l.recs, l.lost
	l.recording, l.recs, l.lost = false, nil, 0
	return recs, lost
}

func (l *exitLog) close() {
	close(l.stop)
	<-l.done
	cpus, _ := os.ReadFile("/sys/devices/system/cpu/possible")
	msg := genlMsg(l.family, unix.TASKSTATS_CMD_GET, nlAttr(unix.TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK, append([]byte(strings.TrimSpace(string(cpus))), 0)))
	unix.Sendto(l.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	unix.Close(l.fd)
}

func cString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// Generic netlink framing: nlmsghdr, genlmsghdr, then attributes padded to
// four bytes.

type nlMsg struct {
	typ  uint16
	data []byte // after the nlmsghdr
}

type nlAttrib struct {
	typ  uint16
	data []byte
}

func genlMsg(family uint16, cmd uint8, attrs ...[]byte) []byte {
	body := []byte{cmd, 1, 0, 0} // genlmsghdr: cmd, version 1, reserved
	for _, a := range attrs {
		body = append(body, a...)
	}
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], family)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	return append(msg, body...)
}

func nlAttr(typ uint16, payload []byte) []byte {
	n := 4 + len(payload)
	a := make([]byte, (n+3)&^3)
	binary.NativeEndian.PutUint16(a[0:], uint16(n))
	binary.NativeEndian.PutUint16(a[2:], typ)
	copy(a[4:], payload)
	return a
}

func splitNl(b []byte) []nlMsg {
	var out []nlMsg
	for len(b) >= unix.NLMSG_HDRLEN {
		n := int(binary.NativeEndian.Uint32(b[0:]))
		if n < unix.NLMSG_HDRLEN || n > len(b) {
			break
		}
		out = append(out, nlMsg{typ: binary.NativeEndian.Uint16(b[4:]), data: b[unix.NLMSG_HDRLEN:n]})
		b = b[min((n+3)&^3, len(b)):]
	}
	return out
}

func splitAttrs(b []byte) []nlAttrib {
	var out []nlAttrib
	for len(b) >= 4 {
		n := int(binary.NativeEndian.Uint16(b[0:]))
		if n < 4 || n > len(b) {
			break
		}
		out = append(out, nlAttrib{typ: binary.NativeEndian.Uint16(b[2:]) &^ unix.NLA_F_NESTED, data: b[4:n]})
		b = b[min((n+3)&^3, len(b)):]
	}
	return out
}
