package tcp

import "syscall"

// syscallEMFILE is "too many open files": temporary, worth a back-off.
const syscallEMFILE = syscall.EMFILE
