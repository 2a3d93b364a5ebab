"""A guest whose kernel locked up at boot, as its serial console shows it (bakery.qemu.soft_lockup)."""

from __future__ import annotations

from bakery.qemu import soft_lockup

# the serial console of a debian12-nginx smoke boot that hung under TCG (both vCPUs, never came back)
HUNG = """\
bakery-root: clean, 10809/262144 files, 130285/1048320 blocks
[   28.319610] rcu: INFO: rcu_preempt self-detected stall on CPU
[   28.319610] rcu: \t0-...!: (4774 ticks this GP) idle=38e4/1/0x4000000000000000 softirq=2924/2924 fqs=0
[   28.319610] rcu: RCU grace-period kthread stack dump:
[   52.469394] watchdog: BUG: soft lockup - CPU#0 stuck for 44s! [(udev-worker):216]
[   52.557282] watchdog: BUG: soft lockup - CPU#1 stuck for 44s! [(udev-worker):205]
"""

# a boot that answered (quiet kernel, fsck from the initramfs, the serial getty)
BOOTED = """\
bakery-root: clean, 10809/262144 files, 130285/1048320 blocks

Debian GNU/Linux 12 bakery ttyS0

bakery login: \n"""


def test_a_locked_up_kernel_is_named_by_its_first_watchdog_line():
    assert soft_lockup(HUNG) == "watchdog: BUG: soft lockup - CPU#0 stuck for 44s! [(udev-worker):216]"


def test_a_boot_that_answered_and_an_rcu_stall_alone_are_no_lockup():
    assert soft_lockup(BOOTED) is None
    assert soft_lockup("") is None
    assert soft_lockup(HUNG.split("[   52.")[0]) is None  # the stall comes first; only the watchdog's verdict counts
