/* The device registry: sorted, complete entries, factories, allowlists. */
#include <criterion/criterion.h>
#include <string.h>

#include "devices/virtio/devproc.h"
#include "devices/virtio/registry.h"

Test(virtio_registry, sorted_and_complete)
{
	const struct registry_entry *e, *prev = NULL;
	for (size_t i = 0; (e = registry_at(i)); i++) {
		cr_assert_not_null(e->option);
		cr_assert_not_null(e->ops);
		cr_assert_not_null(e->create);
		cr_assert_not_null(e->destroy);
		cr_assert_not_null(e->ops->queue_kick);
		cr_assert_lt(strlen(e->ops->name), 16, "name must fit the HELLO reply");
		cr_assert_eq(e->n_rules == 0, e->rules == NULL);
		if (prev)
			cr_assert_lt(strcmp(prev->option, e->option), 0, "table not sorted");
		cr_assert_eq(registry_find(e->option), e);
		for (size_t k = 0; k < e->n_rules; k++)
			cr_assert_not(jail_syscall_never_allowed(e->rules[k].nr));
		prev = e;
	}
	cr_assert_null(registry_find("no-such-device"));
	cr_assert_null(registry_find(""));
}

Test(virtio_registry, rng_factory)
{
	const struct registry_entry *e = registry_find("rng");
	void *state = NULL;
	cr_assert_not_null(e);
	cr_assert_eq(e->ops->device_id, VIRTIO_ID_ENTROPY);
	struct registry_ctx ctx = {.ncpus = 1};
	cr_assert_eq(e->create(&ctx, "", &state), 0);
	cr_assert_eq(((struct virtio_dev *)state)->ops, e->ops);
	e->destroy(state);
	cr_assert_eq(e->create(&ctx, "bogus=1", &state), -EINVAL);
}

Test(virtio_registry, devproc_rules_concatenate)
{
	const struct registry_entry *e = registry_find("rng");
	struct jail_syscall_rule rules[8];
	size_t n = devproc_jail_rules(e, rules, 8);
	cr_assert_eq(n, devproc_rules_len + e->n_rules);
	cr_assert_eq(rules[0].nr, devproc_rules[0].nr);
	cr_assert_eq(devproc_jail_rules(e, rules, 0), n, "reports the size it needs");
	for (size_t i = 0; i < devproc_rules_len; i++)
		cr_assert_not(jail_syscall_never_allowed(devproc_rules[i].nr));
}
