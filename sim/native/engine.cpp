// C API around the Verilated engine top: batches of feed messages in, observations,
// telemetry and orders out, register access, optional FST trace window. Loaded by
// obcore.sim.native.
//
// The top's port contract (hw/top.py): feed (valid/ready/payload, 128 bits), obs and telem
// (valid, payload: one record each per accepted feed message, fixed latencies), orders
// (valid/ready/payload, 128 bits), bus (addr, w_en, w_data, r_en, r_data, r_valid). Every
// output is registered. Verilator spells "__" as "___05F" in C++ names.
//
// The model is the wrapper ``simtop`` (sim/native/__init__.py): each of the top's inputs
// reaches it through a register clocked by ``clk_in``. Verilator evaluates logic fed by a
// model input on every eval() and again after the clock edge (the registers it also reads
// have changed); fed by registers only, the whole book and CSR update is evaluated once per
// cycle. So a cycle's inputs are loaded into those registers before its edge: by the
// previous cycle's edge (clk and clk_in rise together: the top takes its inputs, the
// registers the next cycle's), or, for an operation's first cycle, by a clk_in edge alone.
// Between operations the registers hold the idle inputs and the top has taken its last edge.
#include <cstdint>
#include <cstring>
#include <vector>
#include "Vtop.h"
#include "Vtop___024root.h"
#include "verilated.h"
#if VM_TRACE_FST
#include "verilated_fst_c.h"
#endif

namespace {

// Rising edges without a falling-edge eval in between: Verilator 5 detects an edge against
// the clock's previous value, kept under these names; setting them low arms the edge.
// Another Verilator (without them) gets the plain falling eval.
template <typename R> auto arm_edges(R* r, int)
    -> decltype(r->__Vtrigprevexpr___TOP__clk__0 = 0, r->__Vtrigprevexpr___TOP__clk_in__0 = 0,
                true) {
    r->__Vtrigprevexpr___TOP__clk__0 = 0;
    r->__Vtrigprevexpr___TOP__clk_in__0 = 0;
    return true;
}
template <typename R> bool arm_edges(R*, long) { return false; }

struct Engine {
    VerilatedContext ctx;
    Vtop* top;
    uint64_t cycle = 0;
    // What the input registers hold now: the current cycle's order-stream ready and reset.
    bool ready = true, rst = false;
    // Orders that left while the bus was being served, for the next ob_run.
    std::vector<uint8_t> held;
    std::vector<uint64_t> held_cycles;
#if VM_TRACE_FST
    VerilatedFstC* fst = nullptr;
    uint64_t trace_from = 0, trace_to = 0;
#endif
    Engine() {
        top = new Vtop{&ctx};
        idle();
        top->clk = 0;
        top->clk_in = 0;
        top->eval();
        load();
    }
    ~Engine() {
#if VM_TRACE_FST
        if (fst) { fst->close(); delete fst; }
#endif
        top->final();
        delete top;
    }
    // The inputs of a cycle with nothing to do (register address and data are don't-cares).
    void idle() {
        top->feed___05Fvalid = 0;
        top->orders___05Fready = 1;
        top->bus___05Fw_en = 0;
        top->bus___05Fr_en = 0;
        top->rst = 0;
    }
    bool tracing() const {
#if VM_TRACE_FST
        return fst != nullptr;
#else
        return false;
#endif
    }
    void dump(uint64_t t) {
#if VM_TRACE_FST
        if (!fst || cycle < trace_from) return;
        if (cycle < trace_to) {
            fst->dump(t);
        } else {  // the window is over: finish the file now, not at ob_free
            fst->close();
            delete fst;
            fst = nullptr;
        }
#else
        (void)t;
#endif
    }
    // Rising edge of clk_in, and of clk when `core`: the input registers take the inputs set
    // now; with `core` the top also takes its clock edge, ending the current cycle.
    void edge(bool core) {
        const bool traced = tracing();
        if (traced || !arm_edges(top->rootp, 0)) {
            top->clk = 0;
            top->clk_in = 0;
            top->eval();
            if (core) dump(2 * cycle);
        }
        top->clk_in = 1;
        top->clk = core;
        top->eval();
        if (core) {
            if (traced) dump(2 * cycle + 1);
            cycle++;
        }
        top->clk = 0;
        top->clk_in = 0;
        ready = top->orders___05Fready;
        rst = top->rst;
    }
    // The inputs set now are the current cycle's (an operation's first cycle).
    void load() { edge(false); }
    // End the current cycle; the inputs set now are the next one's. An order that leaves in
    // this cycle is held for the next ob_run.
    void tick() {
        if (top->orders___05Fvalid && ready && !rst) {
            const uint8_t* p = reinterpret_cast<const uint8_t*>(top->orders___05Fpayload.data());
            held.insert(held.end(), p, p + sizeof(top->orders___05Fpayload));
            held_cycles.push_back(cycle);
        }
        edge(true);
    }
};

template <typename W> void put_words(W& dst, const uint8_t* src) {
    std::memcpy(dst.data(), src, sizeof(W));
}
template <typename W> void get_words(uint8_t* dst, const W& src) {
    std::memcpy(dst, src.data(), sizeof(W));
}

}  // namespace

extern "C" {

uint32_t ob_feed_bytes(void) { return sizeof(Vtop::feed___05Fpayload); }
uint32_t ob_obs_bytes(void) { return sizeof(Vtop::obs___05Fpayload); }
uint32_t ob_order_bytes(void) { return sizeof(Vtop::orders___05Fpayload); }
uint32_t ob_telem_bytes(void) { return sizeof(Vtop::telem___05Fpayload); }

void* ob_new(void) { return new Engine(); }

void ob_free(void* h) { delete static_cast<Engine*>(h); }

uint64_t ob_cycle(void* h) { return static_cast<Engine*>(h)->cycle; }

// Orders held from register accesses, reported by the next ob_run.
uint64_t ob_held(void* h) { return static_cast<Engine*>(h)->held_cycles.size(); }

void ob_reset(void* h, uint32_t cycles) {
    Engine* e = static_cast<Engine*>(h);
    if (cycles) {
        e->top->rst = 1;
        e->load();
        for (uint32_t i = 0; i < cycles; i++) {
            if (i + 1 == cycles) e->top->rst = 0;
            e->tick();
        }
    }
    e->held.clear();
    e->held_cycles.clear();
}

// Run one batch: offer `n` messages (ob_feed_bytes() each) one per cycle as the top accepts
// them, then clock `drain` more cycles. `pause` (null: none) holds per message the cycles
// without a message clocked right after it is accepted, before the next is offered: updates
// each followed by its own gap in one call, the cycles one call per update would clock.
// With `settle` a pause ends early, before a cycle planned in one whose `settling` is 0
// (the inputs of a cycle are set before the edge ending the one before: that cycle's outputs
// are the latest known); the drain is clocked whole.
// Orders that left during register accesses since the last run are reported first.
// Observations go to `obs` and telemetry records to `telem` (room for `cap` each; one per
// accepted message, so n is enough; `telem` may be null: not recorded) and orders to
// `orders`, with the cycle each left the engine in `order_cycles`: when that buffer is full
// the order stream is back-pressured, so no order is lost. Returns the number of
// observations (more than cap means some were not stored); the telemetry and order counts
// go to *n_telem and *n_orders.
uint64_t ob_run(void* h, const uint8_t* msgs, const uint32_t* pause, uint32_t settle,
                uint64_t n, uint32_t drain, uint8_t* obs, uint8_t* telem, uint64_t cap,
                uint8_t* orders, uint64_t* order_cycles, uint64_t orders_cap,
                uint64_t* n_telem, uint64_t* n_orders) {
    Engine* e = static_cast<Engine*>(h);
    Vtop* t = e->top;
    const uint64_t fb = sizeof(t->feed___05Fpayload), ob = sizeof(t->obs___05Fpayload),
                   tb = sizeof(t->telem___05Fpayload), rb = sizeof(t->orders___05Fpayload);
    uint64_t sent = 0, got = 0, tels = 0, ords = 0, idle = 0, gap = 0;
    // Orders held from bus accesses come first (the buffer has room: the caller sizes it).
    for (size_t i = 0; i < e->held_cycles.size() && ords < orders_cap; i++) {
        order_cycles[ords] = e->held_cycles[i];
        std::memcpy(orders + ords++ * rb, e->held.data() + i * rb, rb);
    }
    e->held.clear();
    e->held_cycles.clear();
    // Set the next cycle's inputs; false (and the idle inputs) when the batch is done.
    auto plan = [&]() {
        if (gap && settle && !t->settling) gap = 0;
        if (sent >= n && gap == 0 && idle >= drain) {
            t->feed___05Fvalid = 0;
            t->orders___05Fready = 1;   // register accesses never stall the order stream
            return false;
        }
        if (gap) {
            t->feed___05Fvalid = 0;
            gap--;
        } else if (sent < n) {
            t->feed___05Fvalid = 1;
            put_words(t->feed___05Fpayload, msgs + sent * fb);
        } else {
            t->feed___05Fvalid = 0;
            idle++;
        }
        t->orders___05Fready = ords < orders_cap;
        return true;
    };
    bool more = plan();
    if (more) e->load();
    while (more) {
        // This cycle's inputs are in the registers; the outputs show this cycle.
        const bool accept = t->feed___05Fvalid && t->feed___05Fready, ready = e->ready;
        if (t->obs___05Fvalid) {
            if (got < cap) get_words(obs + got * ob, t->obs___05Fpayload);
            got++;
        }
        if (t->telem___05Fvalid) {
            if (telem && tels < cap) get_words(telem + tels * tb, t->telem___05Fpayload);
            tels++;
        }
        if (t->orders___05Fvalid && ready) {
            order_cycles[ords] = e->cycle;
            get_words(orders + ords++ * rb, t->orders___05Fpayload);
        }
        if (accept && pause) gap = pause[sent];
        if (accept) sent++;
        more = plan();
        e->edge(true);
    }
    *n_telem = tels;
    *n_orders = ords;
    return got;
}

void ob_write(void* h, uint32_t addr, uint32_t data) {
    Engine* e = static_cast<Engine*>(h);
    e->top->bus___05Faddr = addr;
    e->top->bus___05Fw_data = data;
    e->top->bus___05Fw_en = 1;
    e->load();
    e->top->bus___05Fw_en = 0;
    e->tick();
}

uint32_t ob_read(void* h, uint32_t addr) {
    Engine* e = static_cast<Engine*>(h);
    e->top->bus___05Faddr = addr;
    e->top->bus___05Fr_en = 1;
    e->load();
    e->top->bus___05Fr_en = 0;
    e->tick();
    for (int i = 0; i < 4 && !e->top->bus___05Fr_valid; i++) e->tick();
    return e->top->bus___05Fr_data;
}

// Bulk bus access: exactly the cycles of ob_read / ob_write once per word, in one call
// instead of one per word (the ctypes call, not the model, is the cost of a word).

// Read the words at `addrs[0..n)` into `out`, in order.
void ob_read_many(void* h, const uint32_t* addrs, uint64_t n, uint32_t* out) {
    for (uint64_t i = 0; i < n; i++) out[i] = ob_read(h, addrs[i]);
}

// Write `words[i]` to `addrs[i]` for i in 0..n, in order: the top sees the cycles of ob_write
// once per word, but each word's inputs are loaded by the previous word's edge (as ob_run
// loads its messages), so n words take n + 1 evaluations instead of 2n.
void ob_write_many(void* h, const uint32_t* addrs, const uint32_t* words, uint64_t n) {
    Engine* e = static_cast<Engine*>(h);
    for (uint64_t i = 0; i < n; i++) {
        e->top->bus___05Faddr = addrs[i];
        e->top->bus___05Fw_data = words[i];
        e->top->bus___05Fw_en = 1;
        if (i == 0) e->load(); else e->tick();
    }
    if (n) {
        e->top->bus___05Fw_en = 0;
        e->tick();
    }
}

// Record an FST trace of cycles [from, to) into `path`. Returns 0 if this build has no trace.
int ob_trace(void* h, const char* path, uint64_t from, uint64_t to) {
#if VM_TRACE_FST
    Engine* e = static_cast<Engine*>(h);
    if (e->fst) { e->fst->close(); delete e->fst; }
    e->ctx.traceEverOn(true);
    e->fst = new VerilatedFstC;
    e->top->trace(e->fst, 99);
    e->fst->open(path);
    e->trace_from = from;
    e->trace_to = to;
    return 1;
#else
    (void)h; (void)path; (void)from; (void)to;
    return 0;
#endif
}

}  // extern "C"
