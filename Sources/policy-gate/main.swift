import PolicyGateCLI

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// All the work is in PolicyGateCLI, where tests run it in-process; this only connects the
// process's arguments and streams to it.
let status = PolicyGateTool.run(
    arguments: Array(CommandLine.arguments.dropFirst()), stdout: StandardStream.output, stderr: StandardStream.error)
exit(status)
