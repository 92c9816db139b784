/*
 * Unit tests for devices/legacy/i8042: the status register, the controller
 * commands Linux's probe uses, and which writes pulse the reset callback.
 */
#include <criterion/criterion.h>

#include "devices/legacy/i8042.h"

static struct i8042 *kbc;
static int resets;

static void on_reset(void *opaque)
{
	cr_assert_eq(opaque, &resets);
	resets++;
}

static uint8_t status(void)
{
	uint8_t v = 0;
	i8042_command_ops.read(kbc, 0, &v, 1);
	return v;
}

static uint8_t data(void)
{
	uint8_t v = 0;
	i8042_data_ops.read(kbc, 0, &v, 1);
	return v;
}

static void cmd(uint8_t c)
{
	i8042_command_ops.write(kbc, 0, &c, 1);
}

static void put(uint8_t d)
{
	i8042_data_ops.write(kbc, 0, &d, 1);
}

/* Run a one-byte-response command the way Linux's i8042_command does. */
static uint8_t query(uint8_t c)
{
	cmd(c);
	cr_assert(status() & 0x01, "OBF after command %#x", c);
	return data();
}

static void setup(void)
{
	resets = 0;
	cr_assert_eq(i8042_create(&kbc, on_reset, &resets), 0);
}

static void teardown(void)
{
	i8042_destroy(kbc);
	kbc = NULL;
}

TestSuite(devices_i8042, .init = setup, .fini = teardown);

Test(devices_i8042, status_idle)
{
	uint8_t st = status();
	cr_assert_eq(st & 0x01, 0, "output buffer empty: no keyboard");
	cr_assert_eq(st & 0x02, 0, "input buffer never full");
	cr_assert(st & 0x10, "keyboard not inhibited (Linux warns otherwise)");
	cr_assert_neq(st, 0xff, "Linux takes 0xff as no controller");
}

Test(devices_i8042, self_test_answers_0x55)
{
	cr_assert_eq(query(0xaa), 0x55);
	cr_assert_eq(status() & 0x01, 0, "reading data empties the buffer");
	cr_assert(status() & 0x04, "system flag set after self-test");
}

Test(devices_i8042, command_byte_read_write)
{
	uint8_t ctr = query(0x20);
	cr_assert_eq(ctr, 0x65, "kbd int, sys, aux disabled, translate");
	cr_assert_eq(query(0x20), ctr, "Linux reads it until two reads agree");
	cmd(0x60);
	put(0x47);
	cr_assert_eq(status() & 0x01, 0, "a parameter is not a response");
	cr_assert_eq(query(0x20), 0x47);
	cr_assert_eq(resets, 0);
}

Test(devices_i8042, port_enable_bits_in_ctr)
{
	static const struct {
		uint8_t cmd, set, clear;
	} cases[] = {
	    {0xa7, 0x20, 0x00}, /* AUX disable */
	    {0xa8, 0x00, 0x20}, /* AUX enable */
	    {0xad, 0x10, 0x00}, /* KBD disable */
	    {0xae, 0x00, 0x10}, /* KBD enable */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cmd(cases[i].cmd);
		uint8_t ctr = query(0x20);
		cr_assert_eq(ctr & cases[i].set, cases[i].set, "case %zu", i);
		cr_assert_eq(ctr & cases[i].clear, 0, "case %zu", i);
	}
}

Test(devices_i8042, interface_tests)
{
	cr_assert_eq(query(0xab), 0x00, "keyboard interface fine");
	cr_assert_eq(query(0xa9), 0x02, "no AUX device: Linux skips the mouse at once");
}

Test(devices_i8042, loop_commands)
{
	cmd(0xd2);
	put(0x5a);
	cr_assert_eq(status() & 0x21, 0x01, "keyboard loop: kbd data");
	cr_assert_eq(data(), 0x5a);
	cmd(0xd3);
	put(0x5a);
	cr_assert_eq(status() & 0x21, 0x01, "AUX loop echo without AUXDATA: auxerr in Linux");
	cr_assert_eq(data(), 0x5a);
}

Test(devices_i8042, a20_commands_are_harmless)
{
	cmd(0xdd);
	cr_assert_eq(query(0xd0) & 0x03, 0x01, "A20 off, reset line high");
	cmd(0xdf);
	cr_assert_eq(query(0xd0) & 0x03, 0x03);
	cmd(0xd1);
	put(0xdd);
	cr_assert_eq(query(0xd0), 0xdd);
	cr_assert_eq(resets, 0);
}

Test(devices_i8042, reset_on_0xfe)
{
	cmd(0xfe);
	cr_assert_eq(resets, 1);
	cr_assert_eq(i8042_reset_count(kbc), 1);
}

Test(devices_i8042, reset_through_output_port_bit0)
{
	cmd(0xd1);
	put(0x02);
	cr_assert_eq(resets, 1);
}

Test(devices_i8042, no_reset_on_other_writes)
{
	static const uint8_t cmds[] = {
	    0x20, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xad, 0xae, 0xc0,
	    0xd0, 0xdd, 0xdf, 0xe0, 0xff, 0xfd, 0x00, 0x01,
	};
	for (size_t i = 0; i < sizeof(cmds); i++) {
		cmd(cmds[i]);
		(void)data();
	}
	/* 0xfe as data, not as a command: a parameter, a keyboard byte, an AUX byte. */
	cmd(0x60);
	put(0x65);
	put(0xfe);
	cmd(0xd4);
	put(0xfe);
	cmd(0xd1);
	put(0x03);
	cr_assert_eq(resets, 0);
	cr_assert_eq(i8042_reset_count(kbc), 0);
}

Test(devices_i8042, reset_without_callback_is_counted)
{
	struct i8042 *k;
	cr_assert_eq(i8042_create(&k, NULL, NULL), 0);
	uint8_t c = 0xfe;
	i8042_command_ops.write(k, 0, &c, 1);
	cr_assert_eq(i8042_reset_count(k), 1);
	i8042_destroy(k);
}

Test(devices_i8042, new_command_aborts_pending_parameter)
{
	cmd(0x60);
	cmd(0xaa);
	cr_assert_eq(data(), 0x55);
	put(0x00); /* would have cleared the CTR */
	cr_assert_eq(query(0x20), 0x65);
}

Test(devices_i8042, wide_read_fills_rest)
{
	cmd(0xaa);
	uint8_t v[2] = {0, 0};
	i8042_data_ops.read(kbc, 0, v, 2);
	cr_assert_eq(v[0], 0x55);
	cr_assert_eq(v[1], 0xff);
}
