/*
 * KVM setup of the VM. Every capability ringvm relies on is checked before
 * anything is created, so an unsuitable host fails with a list of what is
 * missing instead of a confusing ioctl error later.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "arch/x86_64/layout.h"
#include "core/kvm.h"
#include "core/log.h"

/* Just below the BIOS area at the top of 4 GiB, as kvmtool and Firecracker use. */
#define KVM_TSS_ADDR      0xfffbd000ull
#define KVM_IDENT_MAP_ADDR 0xfffbc000ull
#define MAX_CPUID_ENTRIES 256

static const struct {
	int cap;
	const char *name;
} required_caps[] = {
	{KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP (in-kernel IOAPIC/PIC/LAPIC)"},
	{KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
	{KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
	{KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR"},
	{KVM_CAP_PIT2, "KVM_CAP_PIT2"},
	{KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
	{KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
	{KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
	{KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING"},
	{KVM_CAP_SIGNAL_MSI, "KVM_CAP_SIGNAL_MSI"},
	{KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
	{KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
};

int kvm_max_vcpus(int kvm_fd)
{
	int n = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (n <= 0)
		n = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	return n > 0 ? n : 4;
}

static int check_caps(int kvm_fd)
{
	int missing = 0;
	for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++) {
		if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0) {
			log_error("KVM lacks required capability %s", required_caps[i].name);
			missing++;
		}
	}
	return missing ? -ENOTSUP : 0;
}

int kvm_get_cpuid(void *arg)
{
	struct vm *vm = arg;
	vm->cpuid->nent = MAX_CPUID_ENTRIES;
	return ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, vm->cpuid) < 0 ? -errno : 0;
}

int kvm_open(struct vm *vm)
{
	int r;
	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		r = -errno;
		log_error("cannot open /dev/kvm: %s%s", strerror(errno),
			  errno == ENOENT ? " (is the kvm module loaded?)"
			  : errno == EACCES ? " (add yourself to the kvm group or run as root)"
					    : "");
		return r;
	}
	int version = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION) {
		log_error("KVM API version %d, ringvm needs %d", version, KVM_API_VERSION);
		return -ENOTSUP;
	}
	r = check_caps(vm->kvm_fd);
	if (r < 0)
		return r;
	vm->run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->run_size < (int)sizeof(struct kvm_run)) {
		log_error("KVM_GET_VCPU_MMAP_SIZE returned %d", vm->run_size);
		return -EINVAL;
	}
	vm->cpuid = calloc(1, sizeof(struct kvm_cpuid2) +
				      MAX_CPUID_ENTRIES * sizeof(struct kvm_cpuid_entry2));
	return vm->cpuid ? 0 : -ENOMEM;
}

int kvm_create_vm(struct vm *vm)
{
	int r;
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		r = -errno;
		log_error("KVM_CREATE_VM: %s", strerror(errno));
		return r;
	}
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0) {
		r = -errno;
		log_error("KVM_SET_TSS_ADDR: %s", strerror(errno));
		return r;
	}
	uint64_t ident = KVM_IDENT_MAP_ADDR;
	if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &ident) < 0) {
		r = -errno;
		log_error("KVM_SET_IDENTITY_MAP_ADDR: %s", strerror(errno));
		return r;
	}
	return 0;
}

int kvm_create_irqchip(struct vm *vm)
{
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		int r = -errno;
		log_error("KVM_CREATE_IRQCHIP: %s", strerror(errno));
		return r;
	}
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
		int r = -errno;
		log_error("KVM_CREATE_PIT2: %s", strerror(errno));
		return r;
	}
	return 0;
}

int kvm_set_memory(struct vm *vm)
{
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		const struct guest_region *g = &vm->mem.regions[i];
		struct kvm_userspace_memory_region reg = {
			.slot = i,
			.guest_phys_addr = g->gpa,
			.memory_size = g->size,
			.userspace_addr = (uint64_t)(uintptr_t)g->host,
		};
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &reg) < 0) {
			int r = -errno;
			log_error("KVM_SET_USER_MEMORY_REGION slot %u: %s", i, strerror(errno));
			return r;
		}
	}
	return 0;
}

void kvm_close(struct vm *vm)
{
	free(vm->cpuid);
	vm->cpuid = NULL;
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	vm->vm_fd = vm->kvm_fd = -1;
}
