/*
 * i8042 controller model: status register, the controller command set Linux's
 * probe and reboot paths use, a one-byte output buffer, the command byte (CTR)
 * and the output port (A20, reset). Commands complete instantly, so the input
 * buffer is never full and the guest never waits on IBF.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "devices/legacy/i8042.h"

#define STR_OBF     0x01 /* output buffer full */
#define STR_SYS     0x04 /* system flag: self-test passed */
#define STR_CMD     0x08 /* last write went to the command port */
#define STR_KEYLOCK 0x10 /* 1 = keyboard not inhibited (Linux warns when clear) */
#define STR_AUXDATA 0x20 /* output byte came from the AUX port */

#define CTR_KBDINT 0x01
#define CTR_SYS    0x04
#define CTR_KBDDIS 0x10
#define CTR_AUXDIS 0x20
#define CTR_XLATE  0x40

#define OUTP_RESET 0x01 /* active low: writing 0 resets the CPU */
#define OUTP_A20   0x02

enum {
	CMD_READ_RAM = 0x20,  /* 0x20-0x3f: read controller RAM byte n (0 = CTR) */
	CMD_WRITE_RAM = 0x60, /* 0x60-0x7f: next data byte is RAM byte n */
	CMD_AUX_DISABLE = 0xa7,
	CMD_AUX_ENABLE = 0xa8,
	CMD_AUX_TEST = 0xa9,
	CMD_SELF_TEST = 0xaa,
	CMD_KBD_TEST = 0xab,
	CMD_KBD_DISABLE = 0xad,
	CMD_KBD_ENABLE = 0xae,
	CMD_READ_INPUT = 0xc0,
	CMD_READ_OUTPUT = 0xd0,
	CMD_WRITE_OUTPUT = 0xd1,
	CMD_KBD_LOOP = 0xd2,
	CMD_AUX_LOOP = 0xd3,
	CMD_AUX_SEND = 0xd4,
	CMD_A20_OFF = 0xdd,
	CMD_A20_ON = 0xdf,
	CMD_PULSE = 0xf0, /* 0xf0-0xff: pulse output lines whose bit is 0; bit 0 = reset */
};

#define SELF_TEST_OK  0x55
#define PORT_TEST_OK  0x00
#define PORT_CLK_HIGH 0x02 /* interface test: clock line stuck high (nothing plugged in) */

struct i8042 {
	pthread_mutex_t lock;
	i8042_reset_fn *reset;
	void *reset_opaque;
	unsigned reset_count;
	bool in_reset; /* a callback is running; don't re-enter it */

	uint8_t ram[32]; /* controller RAM; ram[0] is the command byte (CTR) */
	uint8_t status;  /* STR_SYS | STR_CMD | STR_KEYLOCK; OBF/AUXDATA derived */
	uint8_t outp;    /* output port */
	uint8_t pending; /* command waiting for its data byte, 0 = none */
	uint8_t out;     /* output buffer (stale after it was read, like hardware) */
	bool out_full, out_aux;
};

static void put_output(struct i8042 *k, uint8_t byte, bool aux)
{
	/* One byte deep: a new response replaces an unread one (Linux flushes first). */
	k->out = byte;
	k->out_full = true;
	k->out_aux = aux;
}

static void set_ram(struct i8042 *k, unsigned idx, uint8_t val)
{
	k->ram[idx] = val;
	if (idx == 0) /* the CTR's system bit is mirrored into the status register */
		k->status = (uint8_t)((k->status & ~STR_SYS) | ((val & CTR_SYS) ? STR_SYS : 0));
}

/* Returns true when the command pulses the reset line. */
static bool run_command(struct i8042 *k, uint8_t cmd)
{
	k->pending = 0; /* a command byte aborts one still waiting for data */
	if (cmd >= CMD_READ_RAM && cmd < CMD_READ_RAM + 32) {
		put_output(k, k->ram[cmd - CMD_READ_RAM], false);
		return false;
	}
	if (cmd >= CMD_WRITE_RAM && cmd < CMD_WRITE_RAM + 32) {
		k->pending = cmd;
		return false;
	}
	if (cmd >= CMD_PULSE)
		return !(cmd & OUTP_RESET);
	switch (cmd) {
	case CMD_AUX_DISABLE:
		k->ram[0] |= CTR_AUXDIS;
		break;
	case CMD_AUX_ENABLE:
		k->ram[0] &= (uint8_t)~CTR_AUXDIS;
		break;
	case CMD_AUX_TEST:
		/*
		 * No mouse: report a dead AUX interface. Linux's i8042_check_aux
		 * then gives up at once instead of waiting 250 ms for an AUX IRQ.
		 */
		put_output(k, PORT_CLK_HIGH, false);
		break;
	case CMD_SELF_TEST:
		k->status |= STR_SYS;
		put_output(k, SELF_TEST_OK, false);
		break;
	case CMD_KBD_TEST:
		put_output(k, PORT_TEST_OK, false);
		break;
	case CMD_KBD_DISABLE:
		k->ram[0] |= CTR_KBDDIS;
		break;
	case CMD_KBD_ENABLE:
		k->ram[0] &= (uint8_t)~CTR_KBDDIS;
		break;
	case CMD_READ_INPUT:
		put_output(k, 0x80, false); /* bit 7: keyboard not inhibited */
		break;
	case CMD_READ_OUTPUT:
		put_output(k, k->outp, false);
		break;
	case CMD_WRITE_OUTPUT:
	case CMD_KBD_LOOP:
	case CMD_AUX_LOOP:
	case CMD_AUX_SEND:
		k->pending = cmd;
		break;
	case CMD_A20_OFF:
		k->outp &= (uint8_t)~OUTP_A20; /* KVM has no A20 gate: recorded only */
		break;
	case CMD_A20_ON:
		k->outp |= OUTP_A20;
		break;
	default:
		break; /* unknown commands are ignored, as by many real controllers */
	}
	return false;
}

/* A data-port write: a pending command's parameter, else a keyboard byte. */
static bool data_write(struct i8042 *k, uint8_t val)
{
	uint8_t cmd = k->pending;
	k->pending = 0;
	if (cmd >= CMD_WRITE_RAM && cmd < CMD_WRITE_RAM + 32) {
		set_ram(k, cmd - CMD_WRITE_RAM, val);
		return false;
	}
	switch (cmd) {
	case CMD_WRITE_OUTPUT:
		k->outp = val;
		return !(val & OUTP_RESET);
	case CMD_KBD_LOOP:
		put_output(k, val, false);
		break;
	case CMD_AUX_LOOP:
		/*
		 * Echoed without STR_AUXDATA, as from a controller with no AUX
		 * port: Linux's i8042_command sees "auxerr" immediately, rather
		 * than polling 500 ms for a byte that never comes.
		 */
		put_output(k, val, false);
		break;
	default:
		/* CMD_AUX_SEND or a keyboard command: nothing is attached to hear it. */
		break;
	}
	return false;
}

/* Run the reset callback outside the lock; skip it if one is already running. */
static void request_reset(struct i8042 *k)
{
	bool call = false;
	pthread_mutex_lock(&k->lock);
	k->reset_count++;
	if (k->reset && !k->in_reset) {
		k->in_reset = true;
		call = true;
	}
	pthread_mutex_unlock(&k->lock);
	if (!call)
		return;
	k->reset(k->reset_opaque);
	pthread_mutex_lock(&k->lock);
	k->in_reset = false;
	pthread_mutex_unlock(&k->lock);
}

static void fill_rest(uint8_t *data, unsigned len)
{
	for (unsigned i = 1; i < len; i++)
		data[i] = 0xff;
}

static void i8042_data_read(void *opaque, uint64_t offset, uint8_t *data, unsigned len)
{
	struct i8042 *k = opaque;
	(void)offset;
	pthread_mutex_lock(&k->lock);
	data[0] = k->out;
	k->out_full = false;
	k->out_aux = false;
	pthread_mutex_unlock(&k->lock);
	fill_rest(data, len);
}

static void i8042_data_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned len)
{
	struct i8042 *k = opaque;
	(void)offset;
	(void)len;
	pthread_mutex_lock(&k->lock);
	k->status &= (uint8_t)~STR_CMD;
	bool reset = data_write(k, data[0]);
	pthread_mutex_unlock(&k->lock);
	if (reset)
		request_reset(k);
}

static void i8042_status_read(void *opaque, uint64_t offset, uint8_t *data, unsigned len)
{
	struct i8042 *k = opaque;
	(void)offset;
	pthread_mutex_lock(&k->lock);
	uint8_t st = k->status;
	if (k->out_full)
		st |= STR_OBF | (k->out_aux ? STR_AUXDATA : 0);
	pthread_mutex_unlock(&k->lock);
	data[0] = st;
	fill_rest(data, len);
}

static void i8042_command_write(void *opaque, uint64_t offset, const uint8_t *data, unsigned len)
{
	struct i8042 *k = opaque;
	(void)offset;
	(void)len;
	pthread_mutex_lock(&k->lock);
	k->status |= STR_CMD;
	bool reset = run_command(k, data[0]);
	pthread_mutex_unlock(&k->lock);
	if (reset)
		request_reset(k);
}

const struct bus_ops i8042_data_ops = {
    .name = "i8042-data",
    .read = i8042_data_read,
    .write = i8042_data_write,
};

const struct bus_ops i8042_command_ops = {
    .name = "i8042-command",
    .read = i8042_status_read,
    .write = i8042_command_write,
};

int i8042_create(struct i8042 **out, i8042_reset_fn *reset, void *opaque)
{
	struct i8042 *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	int err = pthread_mutex_init(&k->lock, NULL);
	if (err) {
		free(k);
		return -err;
	}
	k->reset = reset;
	k->reset_opaque = opaque;
	k->status = STR_KEYLOCK;
	/* What a BIOS leaves: keyboard IRQ and translation on, no mouse. */
	set_ram(k, 0, CTR_KBDINT | CTR_SYS | CTR_AUXDIS | CTR_XLATE);
	k->outp = OUTP_RESET | OUTP_A20;
	*out = k;
	return 0;
}

unsigned i8042_reset_count(struct i8042 *k)
{
	pthread_mutex_lock(&k->lock);
	unsigned n = k->reset_count;
	pthread_mutex_unlock(&k->lock);
	return n;
}

void i8042_destroy(struct i8042 *k)
{
	if (!k)
		return;
	pthread_mutex_destroy(&k->lock);
	free(k);
}
