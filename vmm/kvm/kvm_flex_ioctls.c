#include "vmm/kvm/kvm_flex_ioctls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

int vessel_kvm_get_supported_cpuid(int kvm_fd, struct kvm_cpuid_entry2* entries, uint32_t* nent) {
  struct kvm_cpuid2* c = calloc(1, sizeof(*c) + *nent * sizeof(*entries));
  if (c == NULL) return -1;
  c->nent = *nent;
  int r = ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c);
  if (r == 0) {
    memcpy(entries, c->entries, c->nent * sizeof(*entries));
    *nent = c->nent;
  }
  int saved = errno;
  free(c);
  errno = saved;
  return r;
}

int vessel_kvm_set_cpuid2(int vcpu_fd, const struct kvm_cpuid_entry2* entries, uint32_t nent) {
  struct kvm_cpuid2* c = calloc(1, sizeof(*c) + nent * sizeof(*entries));
  if (c == NULL) return -1;
  c->nent = nent;
  memcpy(c->entries, entries, nent * sizeof(*entries));
  int r = ioctl(vcpu_fd, KVM_SET_CPUID2, c);
  int saved = errno;
  free(c);
  errno = saved;
  return r;
}

static int msr_ioctl(int vcpu_fd, unsigned long request, struct kvm_msr_entry* entries, uint32_t n) {
  struct kvm_msrs* m = calloc(1, sizeof(*m) + n * sizeof(*entries));
  if (m == NULL) return -1;
  m->nmsrs = n;
  memcpy(m->entries, entries, n * sizeof(*entries));
  int r = ioctl(vcpu_fd, request, m);
  if (r > 0) memcpy(entries, m->entries, (size_t)r * sizeof(*entries));
  int saved = errno;
  free(m);
  errno = saved;
  return r;
}

int vessel_kvm_set_msrs(int vcpu_fd, const struct kvm_msr_entry* entries, uint32_t n) {
  return msr_ioctl(vcpu_fd, KVM_SET_MSRS, (struct kvm_msr_entry*)entries, n);
}

int vessel_kvm_get_msrs(int vcpu_fd, struct kvm_msr_entry* entries, uint32_t n) {
  return msr_ioctl(vcpu_fd, KVM_GET_MSRS, entries, n);
}

#if defined(__x86_64__)
int vessel_kvm_get_msr_index_list(int kvm_fd, uint32_t* indices, uint32_t* n) {
  struct kvm_msr_list* l = calloc(1, sizeof(*l) + *n * sizeof(uint32_t));
  if (l == NULL) return -1;
  l->nmsrs = *n;
  int r = ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, l);
  int saved = errno;
  if (r == 0) {
    memcpy(indices, l->indices, l->nmsrs * sizeof(uint32_t));
  }
  *n = l->nmsrs;  // on E2BIG: the count needed
  free(l);
  errno = saved;
  return r;
}

int vessel_kvm_get_cpuid2(int vcpu_fd, struct kvm_cpuid_entry2* entries, uint32_t* nent) {
  struct kvm_cpuid2* c = calloc(1, sizeof(*c) + *nent * sizeof(*entries));
  if (c == NULL) return -1;
  c->nent = *nent;
  int r = ioctl(vcpu_fd, KVM_GET_CPUID2, c);
  int saved = errno;
  if (r == 0) memcpy(entries, c->entries, c->nent * sizeof(*entries));
  *nent = c->nent;
  free(c);
  errno = saved;
  return r;
}

size_t vessel_kvm_xsave_size(void) { return sizeof(struct kvm_xsave); }

int vessel_kvm_get_xsave(int vcpu_fd, void* buffer) { return ioctl(vcpu_fd, KVM_GET_XSAVE, buffer); }

int vessel_kvm_set_xsave(int vcpu_fd, const void* buffer) {
  return ioctl(vcpu_fd, KVM_SET_XSAVE, buffer);
}
#endif
