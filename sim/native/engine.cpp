// C API around the Verilated engine top: batches of feed messages in, observations,
// telemetry and orders out, register access, optional FST trace window. Loaded by
// obcore.sim.native.
//
// The top's port contract (hw/top.py): feed (valid/ready/payload, 128 bits), obs and telem
// (valid, payload: one record each per accepted feed message, fixed latencies), orders
// (valid/ready/payload, 128 bits), bus (addr, w_en, w_data, r_en, r_data, r_valid). Every
// output is registered, so it is sampled once per cycle after the rising edge. Verilator
// spells "__" as "___05F" in C++ names.
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

template <typename T> constexpr int words_of() { return sizeof(T) / 4; }

struct Engine {
    VerilatedContext ctx;
    Vtop* top;
    uint64_t cycle = 0;
#if VM_TRACE_FST
    VerilatedFstC* fst = nullptr;
    uint64_t trace_from = 0, trace_to = 0;
#endif
    Engine() { top = new Vtop{&ctx}; }
    ~Engine() {
#if VM_TRACE_FST
        if (fst) { fst->close(); delete fst; }
#endif
        top->final();
        delete top;
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
    // Orders that left while the bus was being served, for the next ob_run.
    std::vector<uint8_t> held;
    std::vector<uint64_t> held_cycles;
    // One rising edge: settle inputs at clk=0, then clock.
    void tick() {
        top->clk = 0;
        top->eval();
        if (top->orders___05Fvalid && top->orders___05Fready && !top->rst) {
            const uint8_t* p = reinterpret_cast<const uint8_t*>(top->orders___05Fpayload.data());
            held.insert(held.end(), p, p + sizeof(top->orders___05Fpayload));
            held_cycles.push_back(cycle);
        }
        dump(2 * cycle);
        top->clk = 1;
        top->eval();
        dump(2 * cycle + 1);
        cycle++;
    }
};

// One eval per cycle instead of two. Verilator evaluates the input-driven logic (here the
// book's compare-and-insert on the feed word) on every eval() call, so the usual clk=0 eval
// before each rising edge repeats it for nothing: only the edge detector needs to see clk
// low. Where the model keeps its previous-clock value under this (Verilator 5) name, setting
// it low arms the edge; otherwise (another Verilator) the plain two-eval cycle is used.
template <typename R> auto arm_edge(R* r, int) -> decltype(r->__Vtrigprevexpr___TOP__clk__0 = 0,
                                                              true) {
    r->__Vtrigprevexpr___TOP__clk__0 = 0;
    return true;
}
template <typename R> bool arm_edge(R*, long) { return false; }

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

void* ob_new(void) {
    Engine* e = new Engine();
    e->top->feed___05Fvalid = 0;
    e->top->orders___05Fready = 1;
    e->top->bus___05Fw_en = 0;
    e->top->bus___05Fr_en = 0;
    return e;
}

void ob_free(void* h) { delete static_cast<Engine*>(h); }

uint64_t ob_cycle(void* h) { return static_cast<Engine*>(h)->cycle; }

// Orders held from register accesses, reported by the next ob_run.
uint64_t ob_held(void* h) { return static_cast<Engine*>(h)->held_cycles.size(); }

void ob_reset(void* h, uint32_t cycles) {
    Engine* e = static_cast<Engine*>(h);
    e->top->rst = 1;
    for (uint32_t i = 0; i < cycles; i++) e->tick();
    e->top->rst = 0;
    e->held.clear();
    e->held_cycles.clear();
}

// Run one batch: offer `n` messages (ob_feed_bytes() each) one per cycle as the top accepts
// them, then clock `drain` more cycles. Orders that left during register accesses since the
// last run are reported first. Observations go to `obs` and telemetry records to
// `telem` (room for `cap` each; one per accepted message, so n is enough; `telem` may be
// null: not recorded) and orders to `orders`, with the cycle each left the engine in
// `order_cycles`: when that buffer is full the order stream is back-pressured, so no order
// is lost. Returns the number of observations (more than cap means some were not stored);
// the telemetry and order counts go to *n_telem and *n_orders.
uint64_t ob_run(void* h, const uint8_t* msgs, uint64_t n, uint32_t drain, uint8_t* obs,
                uint8_t* telem, uint64_t cap, uint8_t* orders, uint64_t* order_cycles,
                uint64_t orders_cap, uint64_t* n_telem, uint64_t* n_orders) {
    Engine* e = static_cast<Engine*>(h);
    Vtop* t = e->top;
    const uint64_t fb = sizeof(t->feed___05Fpayload), ob = sizeof(t->obs___05Fpayload),
                   tb = sizeof(t->telem___05Fpayload), rb = sizeof(t->orders___05Fpayload);
    uint64_t sent = 0, got = 0, tels = 0, ords = 0, idle = 0;
    // Orders held from bus accesses come first (the buffer has room: the caller sizes it).
    for (size_t i = 0; i < e->held_cycles.size() && ords < orders_cap; i++) {
        order_cycles[ords] = e->held_cycles[i];
        std::memcpy(orders + ords++ * rb, e->held.data() + i * rb, rb);
    }
    e->held.clear();
    e->held_cycles.clear();
#if VM_TRACE_FST
    const bool fast = !e->fst && arm_edge(t->rootp, 0);
#else
    const bool fast = arm_edge(t->rootp, 0);
#endif
    while (sent < n || idle < drain) {
        if (sent < n) {
            t->feed___05Fvalid = 1;
            put_words(t->feed___05Fpayload, msgs + sent * fb);
        } else {
            t->feed___05Fvalid = 0;
            idle++;
        }
        t->orders___05Fready = ords < orders_cap;
        // Fast: every output is registered, so after the last edge it already holds this
        // cycle's value. Otherwise settle the inputs first, as the rising edge will see them.
        if (!fast) {
            t->clk = 0;
            t->eval();
        }
        const bool accept = t->feed___05Fvalid && t->feed___05Fready;
        if (t->obs___05Fvalid) {
            if (got < cap) get_words(obs + got * ob, t->obs___05Fpayload);
            got++;
        }
        if (t->telem___05Fvalid) {
            if (telem && tels < cap) get_words(telem + tels * tb, t->telem___05Fpayload);
            tels++;
        }
        if (t->orders___05Fvalid && t->orders___05Fready) {
            order_cycles[ords] = e->cycle;
            get_words(orders + ords++ * rb, t->orders___05Fpayload);
        }
        if (fast) {
            t->clk = 1;
            arm_edge(t->rootp, 0);
            t->eval();
            t->clk = 0;
        } else {
            e->dump(2 * e->cycle);
            t->clk = 1;
            t->eval();
            e->dump(2 * e->cycle + 1);
        }
        e->cycle++;
        if (accept) sent++;
    }
    t->feed___05Fvalid = 0;
    t->orders___05Fready = 1;   // register accesses never stall the order stream
    *n_telem = tels;
    *n_orders = ords;
    return got;
}

void ob_write(void* h, uint32_t addr, uint32_t data) {
    Engine* e = static_cast<Engine*>(h);
    e->top->bus___05Faddr = addr;
    e->top->bus___05Fw_data = data;
    e->top->bus___05Fw_en = 1;
    e->tick();
    e->top->bus___05Fw_en = 0;
}

uint32_t ob_read(void* h, uint32_t addr) {
    Engine* e = static_cast<Engine*>(h);
    e->top->bus___05Faddr = addr;
    e->top->bus___05Fr_en = 1;
    e->tick();
    e->top->bus___05Fr_en = 0;
    for (int i = 0; i < 4 && !e->top->bus___05Fr_valid; i++) e->tick();
    e->top->eval();
    return e->top->bus___05Fr_data;
}

// Bulk bus access: the same cycles as ob_read / ob_write once per word (one cycle each; a
// read's r_data is there after the edge of its own cycle, so reads go back to back), in one
// call instead of one per word, and with one eval per cycle where the edge can be armed
// (see ob_run; every output is registered, so the order check needs no settling eval).
static void bus_cycle(Engine* e, bool fast) {
    if (!fast) return e->tick();
    Vtop* t = e->top;
    if (t->orders___05Fvalid && t->orders___05Fready && !t->rst) {
        const uint8_t* p = reinterpret_cast<const uint8_t*>(t->orders___05Fpayload.data());
        e->held.insert(e->held.end(), p, p + sizeof(t->orders___05Fpayload));
        e->held_cycles.push_back(e->cycle);
    }
    t->clk = 1;
    arm_edge(t->rootp, 0);
    t->eval();
    t->clk = 0;
    e->cycle++;
}

static bool bus_fast(Engine* e) {
#if VM_TRACE_FST
    return !e->fst && arm_edge(e->top->rootp, 0);
#else
    return arm_edge(e->top->rootp, 0);
#endif
}

// Read the words at `addrs[0..n)` into `out`, in order.
void ob_read_many(void* h, const uint32_t* addrs, uint64_t n, uint32_t* out) {
    Engine* e = static_cast<Engine*>(h);
    const bool fast = bus_fast(e);
    for (uint64_t i = 0; i < n; i++) {
        e->top->bus___05Faddr = addrs[i];
        e->top->bus___05Fr_en = 1;
        bus_cycle(e, fast);
        e->top->bus___05Fr_en = 0;
        for (int k = 0; k < 4 && !e->top->bus___05Fr_valid; k++) bus_cycle(e, fast);
        out[i] = e->top->bus___05Fr_data;
    }
}

// Write `words[i]` to `addrs[i]` for i in 0..n, in order.
void ob_write_many(void* h, const uint32_t* addrs, const uint32_t* words, uint64_t n) {
    Engine* e = static_cast<Engine*>(h);
    const bool fast = bus_fast(e);
    for (uint64_t i = 0; i < n; i++) {
        e->top->bus___05Faddr = addrs[i];
        e->top->bus___05Fw_data = words[i];
        e->top->bus___05Fw_en = 1;
        bus_cycle(e, fast);
        e->top->bus___05Fw_en = 0;
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
