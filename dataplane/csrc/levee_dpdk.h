/* The DPDK headers levee's binding is generated from (see build.rs). */
#include <rte_config.h>
#include <rte_errno.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <rte_eth_ring.h>

/* rte_errno is a per-lcore thread-local behind a macro; bindgen cannot see it. */
int levee_rte_errno(void);
