/*
 * A qemu TCG plugin: count every executed guest instruction (as qemu's libinsn does) and report the running
 * count whenever the guest makes the "mark" system call, so one emulated process yields per-stage counts.
 *
 * The guest marks with syscall(MARK_SYSCALL, code): no Linux syscall has this number, so qemu answers ENOSYS and
 * nothing else happens, but the plugin's syscall callback sees it first and writes
 *     mark CODE VCPU COUNT_OF_THAT_VCPU COUNT_OF_ALL_VCPUS
 * to qemu's log (-d plugin -D FILE). At exit it writes "total insns: N" like libinsn, so the same parser reads both.
 * Counting is inline and per instruction (a scoreboard slot per vCPU): the count at a mark includes every
 * instruction up to and including the svc of that mark.
 *
 * Built by bench/aarch64/qemu-count.sh against the qemu-plugin.h of the qemu it loads into.
 */
#include <inttypes.h>
#include <stdio.h>

#include <glib.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_SYSCALL 19777 /* 0x4d41, "MA": far above aarch64's last syscall number */

static struct qemu_plugin_scoreboard *counts;
static qemu_plugin_u64 insns;

static void tb_translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(insn, QEMU_PLUGIN_INLINE_ADD_U64, insns, 1);
    }
}

static void syscall_entered(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                            uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num != MARK_SYSCALL) {
        return;
    }
    g_autofree gchar *line = g_strdup_printf("mark %" PRIu64 " %u %" PRIu64 " %" PRIu64 "\n", a1, vcpu,
                                             qemu_plugin_u64_get(insns, vcpu), qemu_plugin_u64_sum(insns));
    qemu_plugin_outs(line);
}

static void exited(qemu_plugin_id_t id, void *data)
{
    g_autofree gchar *line = g_strdup_printf("total insns: %" PRIu64 "\n", qemu_plugin_u64_sum(insns));
    qemu_plugin_outs(line);
    qemu_plugin_scoreboard_free(counts);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    counts = qemu_plugin_scoreboard_new(sizeof(uint64_t));
    insns = qemu_plugin_scoreboard_u64(counts);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_translated);
    qemu_plugin_register_vcpu_syscall_cb(id, syscall_entered);
    qemu_plugin_register_atexit_cb(id, exited, NULL);
    return 0;
}
