/* Things bindgen cannot generate: accessors for DPDK macros. */
#include "levee_dpdk.h"

int levee_rte_errno(void) { return rte_errno; }
