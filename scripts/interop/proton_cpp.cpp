// Qpid Proton C++ (Debian's libqpid-proton-cpp12-dev) against Sluice.
//
// usage: proton_cpp URL SCENARIO
//
// Scenarios (each uses node names of its own, unique per run):
//   queue        100 durable messages sent at least once, each accepted, then
//                received in order; a receiver that asks for at-most-once
//                (snd-settle-mode settled) consumes what it is sent.
//   selector     a JMS selector receiver gets only what it selects, in order,
//                and its attach lists the filter; another receiver then gets
//                what it skipped; a selector that does not parse refuses that
//                link with amqp:invalid-field, and the connection carries on.
//   temporary    a sender with a dynamic target (a JMS temporary queue) is
//                given an address, and a receiver on it gets what was sent.
//   queue-types  against a broker configured with the queues the Rust test
//                names: priority order, the last value per key, message
//                groups held by one consumer, a single active consumer that
//                hands over in attach order, and scheduled delivery.
//
// Like the Python scripts it prints one line per check, `ok: ...` or
// `FAIL: ...`, and exits 0 only if every check passed. Every wait is bounded
// by a timer; nothing sleeps.
//
// The Proton C++ 0.37 API has no transaction coordinator, so transactions are
// tested with the Python, rhea and fe2o3 clients only.

#include <proton/annotation_key.hpp>
#include <proton/connection.hpp>
#include <proton/container.hpp>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/message.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sender.hpp>
#include <proton/sender_options.hpp>
#include <proton/source.hpp>
#include <proton/source_options.hpp>
#include <proton/target.hpp>
#include <proton/target_options.hpp>
#include <proton/tracker.hpp>
#include <proton/codec/encoder.hpp>
#include <proton/work_queue.hpp>

#include <chrono>
#include <functional>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

// Every scenario step is bounded by this; the Rust harness bounds the whole
// program at 60 s.
const std::chrono::seconds STEP_TIMEOUT(10);
// How often a step checks its deadline.
const proton::duration TICK = proton::duration(50);

struct Checks {
    int passed = 0;
    int failed = 0;

    bool check(bool condition, const std::string& what) {
        std::cout << (condition ? "ok: " : "FAIL: ") << what << std::endl;
        (condition ? passed : failed)++;
        return condition;
    }
};

Checks checks;

std::string unique(const std::string& prefix) {
    std::random_device random;
    std::ostringstream name;
    name << prefix << "-" << std::hex << random();
    return name.str();
}

std::string joined(const std::vector<std::string>& items) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); i++) {
        out += (i ? ", " : "") + items[i];
    }
    return out + "]";
}

std::string body_of(const proton::message& m) {
    return proton::get<std::string>(m.body());
}

proton::message text(const std::string& body) {
    proton::message m(body);
    m.durable(true);
    return m;
}

// A source filter map holding one JMS selector.
proton::source::filter_map selector(const std::string& expression) {
    proton::value filter;
    proton::codec::encoder encoder(filter);
    encoder << proton::codec::start::described()
            << proton::symbol("apache.org:selector-filter:string") << expression
            << proton::codec::finish();
    proton::source::filter_map filters;
    filters.put(proton::symbol("jms-selector"), filter);
    return filters;
}

// One step of a scenario: a connection of its own, driven by event
// callbacks, ended by `done()` or by the step's time-out (a failed check).
class Step : public proton::messaging_handler {
  public:
    explicit Step(std::string url, std::string what) : url_(std::move(url)), what_(std::move(what)) {}

    void run() {
        proton::container container(*this);
        container.run();
    }

  protected:
    proton::connection connection;

    virtual void start() = 0;

    void done() { connection.close(); }

    void on_container_start(proton::container& container) override {
        deadline_ = std::chrono::steady_clock::now() + STEP_TIMEOUT;
        tick(container);
        connection = container.connect(url_);
        start();
    }

    void on_transport_close(proton::transport&) override { closed_ = true; }

    void on_error(const proton::error_condition& error) override {
        if (!timed_out_) {
            checks.check(false, what_ + ": no error (" + error.what() + ")");
        }
        connection.close();
    }

  private:
    // Checks the deadline every tick until the connection is gone: a timer
    // cannot be cancelled in this API, and the container runs until its
    // last timer has fired.
    void tick(proton::container& container) {
        if (closed_) {
            return;
        }
        if (std::chrono::steady_clock::now() > deadline_) {
            timed_out_ = true;
            checks.check(false, what_ + ": finished within the time-out");
            container.stop();
            return;
        }
        container.schedule(TICK, [this, &container]() { tick(container); });
    }

    std::string url_;
    std::string what_;
    std::chrono::steady_clock::time_point deadline_;
    bool closed_ = false;
    bool timed_out_ = false;
};

// Sends `messages` to `address`, each unsettled, and counts the outcomes.
class Send : public Step {
  public:
    Send(const std::string& url, std::string address, std::vector<proton::message> messages)
        : Step(url, "send to " + address), address_(std::move(address)), messages_(std::move(messages)) {}

    size_t accepted = 0;
    size_t refused = 0;

  protected:
    void start() override { connection.open_sender(address_); }

    void on_sendable(proton::sender& sender) override {
        while (sender.credit() > 0 && next_ < messages_.size()) {
            sender.send(messages_[next_++]);
        }
    }

    void on_tracker_accept(proton::tracker&) override { outcome(accepted); }
    void on_tracker_reject(proton::tracker&) override { outcome(refused); }
    void on_tracker_release(proton::tracker&) override { outcome(refused); }

    // A sender's errors are reported by the checks on its counts.
    void on_sender_error(proton::sender&) override {}

  private:
    void outcome(size_t& count) {
        count++;
        if (accepted + refused == messages_.size()) {
            done();
        }
    }

    std::string address_;
    std::vector<proton::message> messages_;
    size_t next_ = 0;
};

void send(const std::string& url, const std::string& address, std::vector<proton::message> messages) {
    size_t count = messages.size();
    Send step(url, address, std::move(messages));
    step.run();
    checks.check(step.accepted == count, "all " + std::to_string(count) + " sends to " + address +
                                             " accepted (" + std::to_string(step.accepted) + ")");
}

// Receives from `address` until `until` says the bodies so far are enough.
class Receive : public Step {
  public:
    Receive(const std::string& url, std::string address, proton::receiver_options options,
            std::function<bool(const std::vector<std::string>&)> until)
        : Step(url, "receive from " + address),
          address_(std::move(address)),
          options_(std::move(options)),
          until_(std::move(until)) {}

    std::vector<std::string> bodies;
    std::vector<proton::message> messages;
    bool settled_by_broker = true;
    size_t answered_filters = 0;

  protected:
    void start() override { connection.open_receiver(address_, options_); }

    void on_receiver_open(proton::receiver& receiver) override {
        answered_filters = receiver.source().filters().size();
    }

    void on_message(proton::delivery& delivery, proton::message& message) override {
        settled_by_broker = settled_by_broker && delivery.settled();
        bodies.push_back(body_of(message));
        messages.push_back(message);
        if (until_(bodies)) {
            done();
        }
    }

  private:
    std::string address_;
    proton::receiver_options options_;
    std::function<bool(const std::vector<std::string>&)> until_;
};

std::function<bool(const std::vector<std::string>&)> count_of(size_t n) {
    return [n](const std::vector<std::string>& bodies) { return bodies.size() >= n; };
}

std::function<bool(const std::vector<std::string>&)> through(const std::string& last) {
    return [last](const std::vector<std::string>& bodies) { return !bodies.empty() && bodies.back() == last; };
}

proton::receiver_options credit(int n) { return proton::receiver_options().credit_window(n); }

std::vector<std::string> receive(const std::string& url, const std::string& address,
                                 std::function<bool(const std::vector<std::string>&)> until) {
    Receive step(url, address, credit(100), std::move(until));
    step.run();
    return step.bodies;
}

std::vector<proton::message> texts(const std::string& prefix, int n) {
    std::vector<proton::message> messages;
    for (int i = 0; i < n; i++) {
        messages.push_back(text(prefix + " " + std::to_string(i)));
    }
    return messages;
}

void queue(const std::string& url) {
    const std::string q = unique("cpp-queue");
    send(url, q, texts("m", 100));
    std::vector<std::string> got = receive(url, q, count_of(100));
    std::vector<std::string> want;
    for (const auto& m : texts("m", 100)) {
        want.push_back(body_of(m));
    }
    checks.check(got == want, "received the 100 messages once each, in order");

    const std::string once = unique("cpp-at-most-once");
    send(url, once, texts("once", 3));
    Receive at_most_once(url, once, credit(10).delivery_mode(proton::delivery_mode::AT_MOST_ONCE),
                         count_of(3));
    at_most_once.run();
    checks.check(at_most_once.bodies.size() == 3 && at_most_once.settled_by_broker,
                 "an at-most-once receiver gets the 3 messages, each sent settled");
    send(url, once, {text("end")});
    got = receive(url, once, through("end"));
    checks.check(got == std::vector<std::string>{"end"},
                 "what it was sent settled was consumed: only what came next is left " + joined(got));
}

proton::message colored(const std::string& body, const std::string& color) {
    proton::message m = text(body);
    m.properties().put("color", color);
    return m;
}

// A receiver whose attach is refused: the link's error, and whether the
// connection stayed open to send on afterwards.
class Refused : public Step {
  public:
    Refused(const std::string& url, std::string address, proton::receiver_options options)
        : Step(url, "a refused attach"), address_(std::move(address)), options_(std::move(options)) {}

    std::string condition;
    std::string description;
    bool sent_after = false;

  protected:
    void start() override { connection.open_receiver(address_, options_); }

    void on_receiver_error(proton::receiver& receiver) override {
        condition = receiver.error().name();
        description = receiver.error().description();
    }

    void on_receiver_close(proton::receiver&) override { connection.open_sender(address_); }

    void on_sendable(proton::sender& sender) override {
        if (!sent_after) {
            sent_after = true;
            sender.send(text("after"));
        }
    }

    void on_tracker_accept(proton::tracker&) override { done(); }

  private:
    std::string address_;
    proton::receiver_options options_;
};

void selectors(const std::string& url) {
    const std::string q = unique("cpp-selector");
    send(url, q, {colored("red 1", "red"), colored("blue 1", "blue"), colored("red 2", "red"), colored("end", "red")});
    proton::receiver_options red = credit(10).source(proton::source_options().filters(selector("color = 'red'")));
    Receive selecting(url, q, red, through("end"));
    selecting.run();
    checks.check(selecting.bodies == std::vector<std::string>{"red 1", "red 2", "end"},
                 "the selector receiver gets only red, in order: " + joined(selecting.bodies));
    checks.check(selecting.answered_filters == 1, "the broker's attach lists the selector in effect");
    std::vector<std::string> rest = receive(url, q, count_of(1));
    checks.check(rest == std::vector<std::string>{"blue 1"}, "a plain receiver then gets what it skipped: " + joined(rest));

    proton::receiver_options bad = credit(10).source(proton::source_options().filters(selector("color = ")));
    Refused refused(url, q, bad);
    refused.run();
    checks.check(refused.condition == "amqp:invalid-field",
                 "a selector that does not parse refuses the link with amqp:invalid-field (" + refused.condition +
                     ": " + refused.description + ")");
    checks.check(refused.sent_after, "and the connection stays open: a send after it is accepted");
}

// A sender with a dynamic target, then a receiver on the address it was
// given, on the same connection.
class Temporary : public Step {
  public:
    explicit Temporary(const std::string& url) : Step(url, "a temporary queue") {}

    std::string address;
    std::string received;

  protected:
    void start() override {
        proton::target_options target = proton::target_options().dynamic(true).capabilities(
            {proton::symbol("temporary-queue")});
        connection.open_sender("", proton::sender_options().target(target));
    }

    void on_sender_open(proton::sender& sender) override {
        sender_ = sender;
        address = sender.target().address();
        if (!address.empty()) {
            connection.open_receiver(address, credit(10));
        } else {
            done();
        }
    }

    // Sends once both the receiver is open and the sender has credit,
    // whichever comes last.
    void on_receiver_open(proton::receiver&) override {
        opened_ = true;
        on_sendable(sender_);
    }

    void on_sendable(proton::sender& sender) override {
        if (opened_ && !sent_ && sender.credit() > 0) {
            sent_ = true;
            sender.send(text("reply"));
        }
    }

    void on_message(proton::delivery&, proton::message& message) override {
        received = body_of(message);
        done();
    }

  private:
    proton::sender sender_;
    bool opened_ = false;
    bool sent_ = false;
};

void temporary(const std::string& url) {
    Temporary step(url);
    step.run();
    checks.check(!step.address.empty(), "a dynamic target is given an address: " + step.address);
    checks.check(step.received == "reply", "a receiver on it gets what its sender sent");
}

proton::message priced(const std::string& body, uint8_t priority, const std::string& instrument) {
    proton::message m = text(body);
    m.priority(priority);
    m.properties().put("instrument", instrument);
    return m;
}

proton::message grouped(const std::string& body, const std::string& group) {
    proton::message m = text(body);
    m.group_id(group);
    return m;
}

// Two receivers on `address`, attached in turn, each holding what it gets
// unsettled, then a sender of `first`; ends once all have arrived, and
// accepts them then. With `hand_over`, the first receiver accepts what it
// gets and closes once it has `hand_over` messages, and `then` is sent only
// once it has closed.
class Pair : public Step {
  public:
    Pair(const std::string& url, std::string address, std::vector<proton::message> first,
         std::vector<proton::message> then, size_t hand_over)
        : Step(url, "two receivers on " + address),
          address_(std::move(address)),
          first_(std::move(first)),
          then_(std::move(then)),
          hand_over_(hand_over) {}

    std::vector<std::string> got[2];

  protected:
    void start() override { receivers_[0] = connection.open_receiver(address_, credit(10).auto_accept(false)); }

    void on_receiver_open(proton::receiver& receiver) override {
        if (receiver == receivers_[0]) {
            receivers_[1] = connection.open_receiver(address_, credit(10).auto_accept(false));
        } else {
            queue_for_sending(first_);
        }
    }

    void on_receiver_close(proton::receiver& receiver) override {
        if (receiver == receivers_[0]) {
            queue_for_sending(then_);
        }
    }

    void on_sendable(proton::sender& sender) override {
        while (sender.credit() > 0 && !outbox_.empty()) {
            sender.send(outbox_.front());
            outbox_.erase(outbox_.begin());
        }
    }

    void on_message(proton::delivery& delivery, proton::message& message) override {
        int which = delivery.receiver() == receivers_[0] ? 0 : 1;
        got[which].push_back(body_of(message));
        if (hand_over_ > 0 && which == 0) {
            delivery.accept();
            if (got[0].size() == hand_over_) {
                receivers_[0].close();
            }
        } else {
            held_.push_back(delivery);
        }
        if (got[0].size() + got[1].size() == first_.size() + then_.size()) {
            // Consumed, so that the queue is left empty.
            for (auto& held : held_) {
                held.accept();
            }
            done();
        }
    }

  private:
    void queue_for_sending(const std::vector<proton::message>& messages) {
        outbox_.insert(outbox_.end(), messages.begin(), messages.end());
        if (!sender_) {
            sender_ = connection.open_sender(address_);
        } else {
            on_sendable(sender_);
        }
    }

    std::string address_;
    std::vector<proton::message> first_;
    std::vector<proton::message> then_;
    size_t hand_over_;
    proton::receiver receivers_[2];
    proton::sender sender_;
    std::vector<proton::message> outbox_;
    std::vector<proton::delivery> held_;
};

// Scheduled delivery: what a receiver gets, and when, relative to the send.
class Scheduled : public Step {
  public:
    Scheduled(const std::string& url, std::string address) : Step(url, "scheduled delivery"), address_(std::move(address)) {}

    std::vector<std::string> bodies;
    double delayed_after_s = 0;

  protected:
    void start() override {
        connection.open_receiver(address_, credit(10));
        connection.open_sender(address_);
    }

    void on_sendable(proton::sender& sender) override {
        if (sent_) {
            return;
        }
        sent_ = true;
        sent_at_ = std::chrono::steady_clock::now();
        proton::message later = text("later");
        later.message_annotations().put(proton::symbol("x-opt-delivery-delay"), int64_t(1000));
        sender.send(later);
        sender.send(text("now"));
    }

    void on_message(proton::delivery&, proton::message& message) override {
        bodies.push_back(body_of(message));
        if (bodies.back() == "later") {
            delayed_after_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent_at_).count();
        }
        if (bodies.size() == 2) {
            done();
        }
    }

  private:
    std::string address_;
    bool sent_ = false;
    std::chrono::steady_clock::time_point sent_at_;
};

void queue_types(const std::string& url) {
    send(url, "cpp-priority", {priced("low", 0, "x"), priced("urgent", 9, "x"), priced("normal", 4, "x")});
    std::vector<std::string> got = receive(url, "cpp-priority", count_of(3));
    checks.check(got == std::vector<std::string>{"urgent", "normal", "low"},
                 "a priority queue delivers the highest priority first: " + joined(got));

    send(url, "cpp-last-value",
         {priced("eur 1", 4, "EURUSD"), priced("gbp 1", 4, "GBPUSD"), priced("eur 2", 4, "EURUSD"),
          priced("end", 4, "END")});
    got = receive(url, "cpp-last-value", through("end"));
    checks.check(got == std::vector<std::string>{"gbp 1", "eur 2", "end"},
                 "a last-value queue keeps the latest message per instrument: " + joined(got));

    // Round robin alone would split group A between the two receivers.
    Pair groups(url, "cpp-groups",
                {grouped("a1", "A"), grouped("a2", "A"), grouped("b1", "B"), grouped("a3", "A"), grouped("b2", "B")},
                {}, 0);
    groups.run();
    auto only = [](const std::vector<std::string>& bodies, char group) {
        std::vector<std::string> of;
        for (const auto& body : bodies) {
            if (body[0] == group) {
                of.push_back(body);
            }
        }
        return of;
    };
    bool a_whole = only(groups.got[0], 'a').size() == 3 || only(groups.got[1], 'a').size() == 3;
    bool b_whole = only(groups.got[0], 'b').size() == 2 || only(groups.got[1], 'b').size() == 2;
    checks.check(a_whole && b_whole && !groups.got[0].empty() && !groups.got[1].empty(),
                 "message groups: each group goes whole, in order, to one of the two receivers: " +
                     joined(groups.got[0]) + " " + joined(groups.got[1]));

    Pair active(url, "cpp-single-active", texts("first", 4), texts("then", 2), 4);
    active.run();
    checks.check(active.got[0].size() == 4 && active.got[1] == std::vector<std::string>{"then 0", "then 1"},
                 "a single active consumer: the first attached gets all, the next takes over when it goes: " +
                     joined(active.got[0]) + " " + joined(active.got[1]));

    Scheduled scheduled(url, unique("cpp-scheduled"));
    scheduled.run();
    checks.check(scheduled.bodies == std::vector<std::string>{"now", "later"},
                 "a message with x-opt-delivery-delay comes after one sent next: " + joined(scheduled.bodies));
    checks.check(scheduled.delayed_after_s >= 0.95,
                 "and not before its 1 s delay (" + std::to_string(scheduled.delayed_after_s) + " s)");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: proton_cpp URL queue|selector|temporary|queue-types" << std::endl;
        return 2;
    }
    const std::string url = argv[1];
    const std::string scenario = argv[2];
    const std::map<std::string, std::function<void(const std::string&)>> scenarios = {
        {"queue", queue}, {"selector", selectors}, {"temporary", temporary}, {"queue-types", queue_types}};
    auto found = scenarios.find(scenario);
    if (found == scenarios.end()) {
        std::cerr << "unknown scenario " << scenario << std::endl;
        return 2;
    }
    try {
        found->second(url);
    } catch (const std::exception& error) {
        checks.check(false, std::string("no exception: ") + error.what());
    }
    std::cout << "proton C++ " << scenario << ": " << checks.passed << " passed, " << checks.failed << " failed"
              << std::endl;
    return checks.failed == 0 ? 0 : 1;
}
