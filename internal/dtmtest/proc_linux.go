package dtmtest

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the coordinator die with the test binary, should the
// test binary be killed before its cleanups run.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
