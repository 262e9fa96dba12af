// Two "hosts" on one machine for the multi-host cluster tests: two network namespaces joined by a veth pair,
// with addresses that exist only inside them (10.231.K.1 and .2/24), a hostfile naming those addresses, and an
// Open MPI remote agent (plm_rsh_agent, in ssh's place) that runs the launcher's command inside the namespace
// that holds the address, under its own hostname (a UTS namespace), as ssh would on another machine. mpirun
// starts in the first namespace; ranks talk TCP over the veth link only (btl self,tcp; no shared memory).
// Everything made here is removed by the destructor, also when a check failed, and namespaces left by a
// test process that died are removed when the next one starts.
// Not a network emulator: the veth link has no bandwidth limit or latency of its own.
#pragma once
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace qiltest {

class NetnsHosts {
 public:
  // dir: where the agent script and the hostfile go (a scratch folder of the test).
  explicit NetnsHosts(const std::string& dir) {
    if (geteuid() != 0) {
      why_ = "not root (network namespaces need CAP_SYS_ADMIN; CI runs as root)";
      return;
    }
    for (const char* tool : {"ip", "unshare", "mpirun"})
      if (std::system((std::string("command -v ") + tool + " >/dev/null 2>&1").c_str()) != 0) {
        why_ = std::string("'") + tool + "' is not installed (Debian: iproute2, util-linux, openmpi-bin)";
        return;
      }
    remove_stale();
    const std::string tag = std::to_string(getpid());
    ns_[0] = "qilt" + tag + "-a";
    ns_[1] = "qilt" + tag + "-b";
    const std::string k = std::to_string(getpid() % 250 + 1), la = "qv" + tag + "a", lb = "qv" + tag + "b";
    subnet_ = "10.231." + k + ".0/24";
    addr_[0] = "10.231." + k + ".1";
    addr_[1] = "10.231." + k + ".2";
    const std::string setup =
        "ip netns add " + ns_[0] + " && ip netns add " + ns_[1] + " && ip link add " + la + " netns " + ns_[0] +
        " type veth peer name " + lb + " netns " + ns_[1] + " && ip -n " + ns_[0] + " addr add " + addr_[0] +
        "/24 dev " + la + " && ip -n " + ns_[1] + " addr add " + addr_[1] + "/24 dev " + lb + " && ip -n " + ns_[0] +
        " link set lo up && ip -n " + ns_[1] + " link set lo up && ip -n " + ns_[0] + " link set " + la +
        " up && ip -n " + ns_[1] + " link set " + lb + " up";
    made_ = true;  // whatever part of it succeeded is removed by the destructor
    if (std::system((setup + " 2>/dev/null").c_str()) != 0) {
      why_ = "'ip netns add' / 'ip link add ... type veth' failed (no network namespaces in this container?)";
      return;
    }
    agent_ = dir + "/netns-agent.sh";
    std::ofstream a(agent_);
    a << "#!/bin/sh\n# Open MPI's remote agent for the test's namespaces: agent HOST COMMAND...\nhost=$1; shift\n"
      << "case \"$host\" in\n"
      << "  " << addr_[0] << ") ns=" << ns_[0] << "; name=qilhost-a ;;\n"
      << "  " << addr_[1] << ") ns=" << ns_[1] << "; name=qilhost-b ;;\n"
      << "  *) echo \"netns agent: unknown host $host\" >&2; exit 255 ;;\nesac\n"
      << "exec ip netns exec \"$ns\" unshare --uts sh -c \"hostname $name; $*\"\n";
    a.close();
    hostfile_ = dir + "/hosts";
    std::ofstream h(hostfile_);
    h << addr_[0] << " slots=1\n" << addr_[1] << " slots=1\n";
    h.close();
    if (std::system(("chmod +x '" + agent_ + "'").c_str()) != 0) why_ = "cannot make the agent executable";
  }
  ~NetnsHosts() {
    if (!made_) return;
    for (const std::string& ns : ns_) {
      kill_processes_in(ns);
      std::system(("ip netns del " + ns + " 2>/dev/null").c_str());  // takes its end of the veth pair along
    }
  }
  NetnsHosts(const NetnsHosts&) = delete;
  NetnsHosts& operator=(const NetnsHosts&) = delete;

  bool ok() const { return why_.empty(); }
  const std::string& why_not() const { return why_; }
  const std::string& address(int host) const { return addr_[host]; }

  // The shell command that runs `mpirun` from host 0 with one rank on each host (`mpi_args` go after the
  // launcher's own options: -x ..., the program and its arguments), within `seconds`.
  std::string mpirun(const std::string& mpi_args, int seconds = 300) const {
    std::string inner = "hostname qilhost-a; exec timeout " + std::to_string(seconds) +
                        " mpirun --allow-run-as-root -np 2 --hostfile " + hostfile_ +
                        " --map-by ppr:1:node --bind-to none --mca plm_rsh_agent " + agent_ +
                        " --mca btl self,tcp --mca btl_tcp_if_include " + subnet_ + " --mca oob_tcp_if_include " +
                        subnet_ + " " + mpi_args;
    std::string quoted;  // inner, single-quoted for sh -c
    for (char c : inner) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return "ip netns exec " + ns_[0] + " unshare --uts sh -c '" + quoted + "'";
  }

 private:
  static void kill_processes_in(const std::string& ns) {
    FILE* p = popen(("ip netns pids " + ns + " 2>/dev/null").c_str(), "r");
    if (!p) return;
    for (long pid; std::fscanf(p, "%ld", &pid) == 1;) ::kill(static_cast<pid_t>(pid), SIGKILL);
    pclose(p);
  }
  // Namespaces named qilt<pid>-a/-b whose test process no longer exists.
  static void remove_stale() {
    FILE* p = popen("ip netns list 2>/dev/null", "r");
    if (!p) return;
    std::string all;
    char buf[512];
    while (std::fgets(buf, sizeof buf, p)) all += buf;
    pclose(p);
    std::istringstream is(all);
    for (std::string line; std::getline(is, line);) {
      const std::string name = line.substr(0, line.find(' '));
      if (name.rfind("qilt", 0) != 0 || name.size() < 7) continue;
      const long pid = std::atol(name.c_str() + 4);
      if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0) {
        kill_processes_in(name);
        std::system(("ip netns del " + name + " 2>/dev/null").c_str());
      }
    }
  }

  std::string ns_[2], addr_[2], subnet_, agent_, hostfile_, why_;
  bool made_ = false;
};

}  // namespace qiltest
