// The KVM ioctls whose argument ends in a flexible array (kvm_cpuid2, kvm_msrs).
//
// linux-libc-dev declares those arrays with __DECLARE_FLEX_ARRAY, whose empty struct has size 1 in
// C++ but 0 in C: compiled as C++ the structs get the wrong size and the array the wrong offset,
// so both the ioctl number and the layout would be wrong. These calls are therefore compiled as C
// (kvm_flex_ioctls.c), using the kernel's headers unchanged. Each returns the ioctl's result and
// leaves errno set on failure.
#ifndef VESSEL_VMM_KVM_KVM_FLEX_IOCTLS_H_
#define VESSEL_VMM_KVM_KVM_FLEX_IOCTLS_H_

#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// KVM_GET_SUPPORTED_CPUID with room for *nent entries; on success *nent is the count returned.
int vessel_kvm_get_supported_cpuid(int kvm_fd, struct kvm_cpuid_entry2* entries, uint32_t* nent);
int vessel_kvm_set_cpuid2(int vcpu_fd, const struct kvm_cpuid_entry2* entries, uint32_t nent);
// Return the number of MSRs processed, like the ioctls.
int vessel_kvm_set_msrs(int vcpu_fd, const struct kvm_msr_entry* entries, uint32_t n);
int vessel_kvm_get_msrs(int vcpu_fd, struct kvm_msr_entry* entries, uint32_t n);
#if defined(__x86_64__)
// KVM_GET_MSR_INDEX_LIST with room for *n indices; *n becomes the count (needed, on E2BIG).
int vessel_kvm_get_msr_index_list(int kvm_fd, uint32_t* indices, uint32_t* n);
// KVM_GET_CPUID2 with room for *nent entries; *nent becomes the count (needed, on E2BIG).
int vessel_kvm_get_cpuid2(int vcpu_fd, struct kvm_cpuid_entry2* entries, uint32_t* nent);
// struct kvm_xsave (which ends in a flexible array) as C sees it, and KVM_GET/SET_XSAVE on a
// buffer of that size.
size_t vessel_kvm_xsave_size(void);
int vessel_kvm_get_xsave(int vcpu_fd, void* buffer);
int vessel_kvm_set_xsave(int vcpu_fd, const void* buffer);
#endif

#ifdef __cplusplus
}
#endif

#endif  // VESSEL_VMM_KVM_KVM_FLEX_IOCTLS_H_
