package dev.hive

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.io.TempDir
import java.io.File
import java.nio.file.Path
import java.util.concurrent.TimeUnit

class ExitTest {
    /** A JVM that exits (System.exit and a plain end of main) with handlers running does not crash. */
    @Test
    fun `the JVM exits cleanly with work in flight`(@TempDir dir: Path) {
        for (mode in listOf("exit", "return")) {
            val java = File(System.getProperty("java.home"), "bin/java").path
            val process = ProcessBuilder(
                java,
                "-cp", System.getProperty("java.class.path"),
                "-Djna.library.path=" + System.getProperty("hive.lib.dir"),
                "-XX:ErrorFile=${dir}/hs_err_%p.log",
                "dev.hive.ExitWithWorkInFlightKt", mode,
            ).redirectErrorStream(true).start()
            val finished = process.waitFor(60, TimeUnit.SECONDS)
            if (!finished) process.destroyForcibly()
            val output = process.inputStream.bufferedReader().readText()
            assertTrue(finished, "[$mode] the JVM did not exit within 60 s:\n$output")
            assertEquals(0, process.exitValue(), "[$mode] exit code:\n$output")
            assertTrue("in flight at exit:" in output, "[$mode] the child did not get to the exit:\n$output")
            assertFalse(dir.toFile().list()!!.any { it.startsWith("hs_err") }, "[$mode] the JVM crashed:\n$output")
        }
    }
}
